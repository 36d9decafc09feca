#include "io/permutation.h"
#include "io/sampler.h"
#include "tests/io_test_util.h"

#include "core/philox.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

namespace sambay {
namespace {

using testing::expect_error;
using testing::ScratchDir;

TEST(Permutation, IsABijectionForEverySmallSize) {
  std::vector<uint64_t> sizes;
  for (uint64_t n = 1; n <= 300; ++n) sizes.push_back(n);
  for (uint64_t n : {511, 512, 513, 1000, 4097, 65536}) sizes.push_back(n);
  for (uint64_t n : sizes)
    for (uint64_t key : {0ull, 1ull, 0xdeadbeefcafef00dull}) {
      std::vector<uint64_t> image(n);
      for (uint64_t x = 0; x < n; ++x) image[x] = permute_index(x, n, key);
      std::sort(image.begin(), image.end());
      for (uint64_t x = 0; x < n; ++x) ASSERT_EQ(image[x], x) << "n " << n << " key " << key;
    }
}

TEST(Permutation, ShufflesAndDependsOnTheKey) {
  const uint64_t n = 1000;
  int fixed_points = 0, same_as_other_key = 0;
  for (uint64_t x = 0; x < n; ++x) {
    fixed_points += permute_index(x, n, 5) == x;
    same_as_other_key += permute_index(x, n, 5) == permute_index(x, n, 6);
  }
  // A random permutation has about 1 fixed point, and two agree at about 1 place.
  EXPECT_LT(fixed_points, 10);
  EXPECT_LT(same_as_other_key, 10);
  // Works at the top of the 64-bit range.
  const uint64_t huge = ~uint64_t{0};
  EXPECT_LT(permute_index(huge - 1, huge, 3), huge);
  expect_error([] { permute_index(5, 5, 0); }, {"outside [0, 5)"});
}

// Megatron's rule, replayed from sample 0: the largest weight * (i + 1) - count wins.
std::vector<int64_t> megatron_blend(const std::vector<double>& weights, int64_t n) {
  std::vector<double> w = weights;
  double total = std::accumulate(w.begin(), w.end(), 0.0);
  for (double& x : w) x /= total;
  std::vector<int64_t> count(w.size()), source(n);
  for (int64_t i = 0; i < n; ++i) {
    size_t best = 0;
    for (size_t k = 1; k < w.size(); ++k)
      if (w[k] * (i + 1) - count[k] > w[best] * (i + 1) - count[best]) best = k;
    source[i] = static_cast<int64_t>(best);
    count[best]++;
  }
  return source;
}

TEST(Blend, TwoSourcesFollowMegatronsRuleExactly) {
  // Weights whose normalized values are exact binary fractions, so both sides compute exactly.
  for (auto weights : std::vector<std::vector<double>>{{1, 3}, {1, 1}, {5, 3}, {3, 1}, {1, 7}}) {
    auto units = blend_units_of(weights);
    auto expected = megatron_blend(weights, 20000);
    for (int64_t i = 0; i < 20000; ++i)
      ASSERT_EQ(blend_pick(units, i).source, expected[i])
          << weights[0] << ":" << weights[1] << " sample " << i;
  }
}

class BlendTest : public ::testing::TestWithParam<std::vector<double>> {};

TEST_P(BlendTest, CountsTrackTheWeightsAndIndicesHaveNoGaps) {
  const auto& weights = GetParam();
  const auto units = blend_units_of(weights);
  const int64_t K = static_cast<int64_t>(weights.size());
  const double total_units =
      static_cast<double>(std::accumulate(units.begin(), units.end(), uint64_t{0}));
  const double bound = std::ceil(std::log2(static_cast<double>(K))) / 2 + 1e-9;
  std::vector<int64_t> count(K);
  for (int64_t i = 0; i < 300000; ++i) {
    BlendPick pick = blend_pick(units, i);
    ASSERT_GE(pick.source, 0);
    ASSERT_LT(pick.source, K);
    // Each source's samples are numbered 0, 1, 2, ... in global order.
    ASSERT_EQ(pick.index, count[pick.source]) << "sample " << i;
    count[pick.source]++;
    for (int64_t k = 0; k < K; ++k)
      ASSERT_LE(std::abs(count[k] - static_cast<double>(units[k]) / total_units * (i + 1)), bound)
          << "source " << k << " after " << i + 1 << " samples";
  }
  // Far into a run (no history replayed), each source's numbering still advances by one per
  // pick, and its count still tracks its weight.
  const int64_t start = int64_t{1} << 40;
  std::vector<int64_t> last(K, -1);
  for (int64_t i = start; i < start + 5000; ++i) {
    BlendPick pick = blend_pick(units, i);
    if (last[pick.source] >= 0) {
      ASSERT_EQ(pick.index, last[pick.source] + 1) << "sample " << i;
    }
    last[pick.source] = pick.index;
    ASSERT_LE(std::abs(pick.index - static_cast<double>(units[pick.source]) / total_units * i),
              bound + 1e-3);
  }
}

INSTANTIATE_TEST_SUITE_P(Weights, BlendTest,
                         ::testing::Values(std::vector<double>{1}, std::vector<double>{0.3, 0.7},
                                           std::vector<double>{1, 1, 1},
                                           std::vector<double>{0.6, 0.3, 0.1},
                                           std::vector<double>{5, 1, 2, 0.5, 3},
                                           std::vector<double>{0.01, 1, 10, 3, 3, 2, 7}),
                         [](const auto& info) {
                           return fmt::format("sources{}_{}", info.param.size(), info.index);
                         });

// A dataset whose token at stream position p is p itself (int32), so every chunk can be checked
// against its position; random document lengths, including some of one token.
struct SamplerTest : ::testing::Test {
  ScratchDir dir;
  std::vector<int64_t> doc_starts;  // of the "positions" dataset
  int64_t total = 0;

  std::string make_positions(const std::string& name, int64_t num_docs, uint64_t seed) {
    std::vector<std::vector<int32_t>> docs;
    int64_t at = 0;
    doc_starts.clear();
    for (int64_t d = 0; d < num_docs; ++d) {
      int64_t len = 1 + static_cast<int64_t>(philox_below(seed, 0, d, 30));
      doc_starts.push_back(at);
      docs.emplace_back(len);
      std::iota(docs.back().begin(), docs.back().end(), static_cast<int32_t>(at));
      at += len;
    }
    total = at;
    write_indexed_dataset(dir.file(name), docs, TokenDType::i32);
    return dir.file(name);
  }

  struct Batch {
    std::vector<int32_t> tokens, targets, doc;
    bool operator==(const Batch&) const = default;
  };
  static Batch fill(const Sampler& s, Split split, int64_t first, int64_t count) {
    const int64_t L = s.config.seq_len;
    Batch b{std::vector<int32_t>(count * L), std::vector<int32_t>(count * L),
            std::vector<int32_t>(count * L)};
    fill_samples(s, split, first, count, b.tokens.data(), b.targets.data(), b.doc.data());
    return b;
  }
};

TEST_F(SamplerTest, SamplesAreChunksWithShiftedTargetsAndDocumentIds) {
  const std::string path = make_positions("pos", 300, 1);
  const int64_t L = 16;
  Sampler s = open_sampler({{{path, 1.0}}, L, 42, 0.1});
  const int64_t C = (total - 1) / L;
  EXPECT_EQ(s.num_chunks[0], C);
  EXPECT_EQ(samples_available(s, Split::train) + samples_available(s, Split::valid), C);
  for (Split split : {Split::train, Split::valid}) {
    const int64_t n = samples_available(s, split);
    Batch b = fill(s, split, 0, n);
    for (int64_t i = 0; i < n; ++i) {
      const SampleLocation at = locate_sample(s, split, i);
      const int64_t start = at.chunk * L;
      int32_t expected_doc = 0;
      for (int64_t t = 0; t < L; ++t) {
        const int64_t k = i * L + t;
        ASSERT_EQ(b.tokens[k], start + t) << "sample " << i;
        ASSERT_EQ(b.targets[k], start + t + 1) << "sample " << i;
        // A new document starts at this token (but not at the sample's first token).
        if (t > 0 && std::binary_search(doc_starts.begin(), doc_starts.end(), start + t))
          ++expected_doc;
        ASSERT_EQ(b.doc[k], expected_doc) << "sample " << i << " token " << t;
      }
    }
  }
}

TEST_F(SamplerTest, DocumentIdsAtBoundariesOfAFlatTokenFile) {
  // Documents end with the eod token 0; the eod belongs to the document it ends.
  std::vector<int32_t> tokens = {5, 6, 0, 7, 0, 0, 8, 9, 9, 9, 0, 4, 4};
  write_token_file(dir.file("flat"), tokens.data(), static_cast<int64_t>(tokens.size()), 0, 2);
  Sampler s = open_sampler({{{dir.file("flat"), 1.0}}, 12, 1, 0.0});
  ASSERT_EQ(samples_available(s, Split::train), 1);
  Batch b = fill(s, Split::train, 0, 1);
  EXPECT_EQ(b.tokens, std::vector<int32_t>(tokens.begin(), tokens.begin() + 12));
  EXPECT_EQ(b.targets, std::vector<int32_t>(tokens.begin() + 1, tokens.end()));
  EXPECT_EQ(b.doc, (std::vector<int32_t>{0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 3, 4}));
}

TEST_F(SamplerTest, DocumentIdsSkipEmptyDocuments) {
  write_indexed_dataset(dir.file("e"), {{1, 2}, {}, {}, {3}, {}, {4, 5, 6}}, TokenDType::u16);
  Sampler s = open_sampler({{{dir.file("e"), 1.0}}, 5, 1, 0.0});
  Batch b = fill(s, Split::train, 0, 1);
  EXPECT_EQ(b.doc, (std::vector<int32_t>{0, 0, 1, 2, 2}));
}

TEST_F(SamplerTest, EachEpochVisitsEverySplitChunkOnceInANewOrder) {
  const std::string path = make_positions("pos", 200, 2);
  Sampler s = open_sampler({{{path, 1.0}}, 8, 7, 0.2});
  std::set<int64_t> train_chunks, valid_chunks;
  for (Split split : {Split::train, Split::valid}) {
    const int64_t n = samples_available(s, split);
    ASSERT_GT(n, 10);
    std::vector<std::vector<int64_t>> order(3);
    for (int64_t e = 0; e < 3; ++e)
      for (int64_t i = 0; i < n; ++i) {
        SampleLocation at = locate_sample(s, split, e * n + i);
        ASSERT_EQ(at.epoch, e);
        order[e].push_back(at.chunk);
      }
    for (int64_t e = 0; e < 3; ++e) {
      std::vector<int64_t> sorted = order[e];
      std::sort(sorted.begin(), sorted.end());
      ASSERT_EQ(std::adjacent_find(sorted.begin(), sorted.end()), sorted.end())
          << "repeat in epoch " << e;
      std::vector<int64_t> first_sorted = order[0];
      std::sort(first_sorted.begin(), first_sorted.end());
      ASSERT_EQ(sorted, first_sorted) << "epoch " << e << " covers other chunks";
    }
    EXPECT_NE(order[0], order[1]);
    EXPECT_NE(order[1], order[2]);
    (split == Split::train ? train_chunks : valid_chunks).insert(order[0].begin(), order[0].end());
  }
  // The splits are disjoint and together cover every chunk.
  for (int64_t c : valid_chunks) EXPECT_EQ(train_chunks.count(c), 0u) << "chunk " << c;
  EXPECT_EQ(static_cast<int64_t>(train_chunks.size() + valid_chunks.size()), s.num_chunks[0]);
  EXPECT_EQ(static_cast<int64_t>(valid_chunks.size()), std::llround(0.2 * s.num_chunks[0]));
}

TEST_F(SamplerTest, SplitsStayDisjointWithBlendingAndAcrossSeeds) {
  const std::string a = make_positions("a", 150, 3);
  const std::string b = make_positions("b", 90, 4);
  for (uint64_t seed : {0ull, 1ull, 99ull}) {
    Sampler s = open_sampler({{{a, 2.0}, {b, 1.0}}, 4, seed, 0.25});
    std::set<std::pair<int64_t, int64_t>> train, valid;
    for (int64_t i = 0; i < 3 * samples_available(s, Split::train); ++i) {
      SampleLocation at = locate_sample(s, Split::train, i);
      train.insert({at.source, at.chunk});
    }
    for (int64_t i = 0; i < 3 * samples_available(s, Split::valid); ++i) {
      SampleLocation at = locate_sample(s, Split::valid, i);
      valid.insert({at.source, at.chunk});
    }
    for (const auto& c : valid) ASSERT_EQ(train.count(c), 0u) << "seed " << seed;
  }
}

TEST_F(SamplerTest, AFileListedTwiceSplitsTheSameWayInBothPlaces) {
  const std::string a = make_positions("a", 150, 3);
  Sampler s = open_sampler({{{a, 1.0}, {a, 3.0}}, 4, 5, 0.3});
  std::set<int64_t> train, valid;
  for (int64_t i = 0; i < 2 * samples_available(s, Split::train); ++i)
    train.insert(locate_sample(s, Split::train, i).chunk);
  for (int64_t i = 0; i < 2 * samples_available(s, Split::valid); ++i)
    valid.insert(locate_sample(s, Split::valid, i).chunk);
  for (int64_t c : valid) ASSERT_EQ(train.count(c), 0u) << "chunk " << c;
}

TEST_F(SamplerTest, DeterministicAndRestartableAtAnyStep) {
  const std::string a = make_positions("a", 150, 5);
  const std::string b = make_positions("b", 100, 6);
  SamplerConfig config{{{a, 0.7}, {b, 0.3}}, 8, 1234, 0.05};
  Sampler s1 = open_sampler(config), s2 = open_sampler(config);
  const int64_t n = 2 * samples_available(s1, Split::train) + 17;  // crosses epochs
  Batch all = fill(s1, Split::train, 0, n);
  EXPECT_EQ(fill(s2, Split::train, 0, n), all);  // a fresh sampler agrees
  // Any resume point and batch size reproduces the same stream.
  for (int64_t batch : {1, 3, 8, 64}) {
    for (int64_t first = 0; first + batch <= n; first += batch + 13) {
      Batch part = fill(s2, Split::train, first, batch);
      const int64_t L = config.seq_len;
      ASSERT_TRUE(
          std::equal(part.tokens.begin(), part.tokens.end(), all.tokens.begin() + first * L));
      ASSERT_TRUE(
          std::equal(part.targets.begin(), part.targets.end(), all.targets.begin() + first * L));
      ASSERT_TRUE(std::equal(part.doc.begin(), part.doc.end(), all.doc.begin() + first * L));
    }
  }
  // A different seed gives a different order.
  config.seed = 1235;
  Sampler other = open_sampler(config);
  EXPECT_NE(fill(other, Split::train, 0, 32).tokens, fill(s1, Split::train, 0, 32).tokens);
}

TEST_F(SamplerTest, DataParallelShardingDoesNotChangeTheGlobalBatch) {
  const std::string path = make_positions("pos", 200, 8);
  Sampler s = open_sampler({{{path, 1.0}}, 8, 3, 0.0});
  const int64_t G = 8, L = 8;
  for (int64_t step : {0, 1, 5, 40}) {
    Batch global = fill(s, Split::train, step * G, G);
    for (int64_t ranks : {1, 2, 4, 8}) {
      std::vector<int32_t> tokens, targets, doc;
      for (int64_t r = 0; r < ranks; ++r) {
        SampleRange range = data_parallel_slice(step, G, r, ranks);
        ASSERT_EQ(range.count, G / ranks);
        Batch part = fill(s, Split::train, range.first, range.count);
        tokens.insert(tokens.end(), part.tokens.begin(), part.tokens.end());
        targets.insert(targets.end(), part.targets.begin(), part.targets.end());
        doc.insert(doc.end(), part.doc.begin(), part.doc.end());
      }
      ASSERT_EQ(static_cast<int64_t>(tokens.size()), G * L);
      EXPECT_EQ(tokens, global.tokens) << "step " << step << ", " << ranks << " ranks";
      EXPECT_EQ(targets, global.targets);
      EXPECT_EQ(doc, global.doc);
    }
  }
  expect_error([] { data_parallel_slice(0, 10, 0, 4); }, {"10", "4"});
  expect_error([] { data_parallel_slice(0, 8, 4, 4); }, {"rank 4 of 4"});
}

TEST_F(SamplerTest, BlendedSamplerDrawsSourcesByWeight) {
  const std::string a = make_positions("a", 400, 9);
  const std::string b = make_positions("b", 400, 10);
  Sampler s = open_sampler({{{a, 3.0}, {b, 1.0}}, 4, 11, 0.0});
  std::vector<int64_t> count(2);
  const int64_t n = 4000;
  for (int64_t i = 0; i < n; ++i) count[locate_sample(s, Split::train, i).source]++;
  EXPECT_EQ(count[0], 3000);
  EXPECT_EQ(count[1], 1000);
}

TEST_F(SamplerTest, ConfigErrorsAreNamed) {
  write_indexed_dataset(dir.file("tiny"), {{1, 2, 3, 4, 5}}, TokenDType::u16);
  const std::string tiny = dir.file("tiny");
  expect_error([&] { open_sampler({{{tiny, 1.0}}, 8, 0, 0.0}); }, {tiny, "5 tokens", "0 chunks"});
  expect_error([&] { open_sampler({{{tiny, 1.0}}, 4, 0, 0.1}); }, {tiny, "1 chunks", "validation"});
  expect_error([&] { open_sampler({{{tiny, 0.0}}, 2, 0, 0.0}); }, {"weight 0"});
  expect_error([&] { open_sampler({{{tiny, 1.0}}, 2, 0, 1.0}); }, {"valid_fraction = 1"});
  expect_error([&] { open_sampler({{}, 2, 0, 0.0}); }, {"at least one data source"});
  Sampler s = open_sampler({{{tiny, 1.0}}, 2, 0, 0.0});
  EXPECT_EQ(samples_available(s, Split::valid), 0);
  std::vector<int32_t> out(4);
  expect_error([&] { fill_samples(s, Split::valid, 0, 1, out.data(), out.data(), nullptr); },
               {"no validation split"});
}

TEST_F(SamplerTest, CorruptTokenInsideAParallelFillIsAnError) {
  std::vector<int32_t> tokens(100, 1);
  write_token_file(dir.file("bad"), tokens.data(), 100, 0, 4);
  auto bytes = testing::read_bytes(dir.file("bad"));
  testing::poke<int32_t>(bytes, 32 + 4 * 50, -7);  // the writer refuses it, so damage the file
  testing::write_bytes(dir.file("bad"), bytes);
  Sampler s = open_sampler({{{dir.file("bad"), 1.0}}, 9, 0, 0.0});
  std::vector<int32_t> t(11 * 9), y(11 * 9);
  expect_error([&] { fill_samples(s, Split::train, 0, 11, t.data(), y.data(), nullptr); },
               {dir.file("bad"), "token 50 = -7"});
}

// A token id at or above the model's vocabulary: named with its file, document and offset, at
// open for a small source and when a sample holding it is read for a large one.
class VocabularyCheck : public SamplerTest {
 protected:
  // 20 documents of 10 tokens below 100 plus an eod (100); document 13's token 4 is 500.
  std::string write_data() {
    std::vector<int32_t> tokens;
    for (int d = 0; d < 20; ++d) {
      for (int t = 0; t < 10; ++t) tokens.push_back(d == 13 && t == 4 ? 500 : (d * 7 + t) % 100);
      tokens.push_back(100);
    }
    const std::string path = dir.file("bad_token");
    write_token_file(path, tokens.data(), static_cast<int64_t>(tokens.size()), 100, 2);
    return path;
  }
  static constexpr int64_t kOffset = 13 * 11 + 4;
};

TEST_F(VocabularyCheck, ASmallSourceIsScannedAtOpen) {
  const std::string path = write_data();
  SamplerConfig config{{{path, 1.0}}, 8, 3, 0.0};
  config.vocab = 257;
  expect_error([&] { open_sampler(config); },
               {path, "token 500", fmt::format("offset {} ", kOffset), "document 13, its token 4",
                "vocabulary size 257"});
  config.vocab = 501;  // the token fits a larger vocabulary
  EXPECT_NO_THROW(open_sampler(config));
  config.vocab = 0;  // unchecked
  EXPECT_NO_THROW(open_sampler(config));
}

TEST_F(VocabularyCheck, ALargeSourceIsCheckedAsSamplesAreRead) {
  const std::string path = write_data();
  SamplerConfig config{{{path, 1.0}}, 8, 3, 0.0};
  config.vocab = 257;
  config.vocab_scan_tokens = 0;  // as if the source were too large to scan at open
  const Sampler s = open_sampler(config);
  const int64_t n = samples_available(s, Split::train);
  std::vector<int32_t> t(8), y(8);
  int64_t good = 0, bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    const SampleLocation at = locate_sample(s, Split::train, i);
    // Chunk c holds tokens [8c, 8c + 9).
    const bool holds = at.chunk * 8 <= kOffset && kOffset <= at.chunk * 8 + 8;
    if (!holds) {
      EXPECT_NO_THROW(fill_samples(s, Split::train, i, 1, t.data(), y.data(), nullptr));
      ++good;
      continue;
    }
    expect_error([&] { fill_samples(s, Split::train, i, 1, t.data(), y.data(), nullptr); },
                 {path, "token 500", fmt::format("offset {} ", kOffset),
                  "document 13, its token 4"});
    ++bad;
  }
  EXPECT_GT(good, 0);
  EXPECT_GE(bad, 1);
}

}  // namespace
}  // namespace sambay
