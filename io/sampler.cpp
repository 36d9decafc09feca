#include "io/sampler.h"

#include "core/check.h"
#include "io/permutation.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <exception>

namespace sambay {

DataSourceSpec parse_data_source(const std::string& entry) {
  const size_t colon = entry.rfind(':');
  if (colon != std::string::npos && colon + 1 < entry.size()) {
    const std::string tail = entry.substr(colon + 1);
    char* end = nullptr;
    const double w = std::strtod(tail.c_str(), &end);
    if (end && *end == '\0') {
      if (!(std::isfinite(w) && w > 0))
        fail("option --data: weight of '{}' must be a finite positive number", entry);
      return {entry.substr(0, colon), w};
    }
  }
  return {entry, 1.0};
}

namespace {

// derive_key purpose tags.
constexpr uint64_t kTagSplit = 1, kTagTrainEpoch = 2, kTagValidEpoch = 3;

int64_t split_size(const Sampler& s, int64_t k, Split split) {
  return split == Split::valid ? s.num_valid[k] : s.num_chunks[k] - s.num_valid[k];
}

const char* split_name(Split split) { return split == Split::valid ? "valid" : "train"; }

// The document index of every token of [start, start + n), counted from 0 at start.
void fill_document_ids(const TokenSource& src, int64_t start, int64_t n, int32_t* doc) {
  int64_t d = document_of(src, start);
  int64_t next_start = document_start(src, d + 1);
  int32_t relative = 0;
  for (int64_t t = 0; t < n; ++t) {
    if (start + t >= next_start) {
      // document_of skips empty documents, so each boundary counts once.
      d = document_of(src, start + t);
      next_start = document_start(src, d + 1);
      ++relative;
    }
    doc[t] = relative;
  }
}

// Whether a source's storage type can hold ids at or above `vocab` at all.
bool may_exceed(const TokenSource& src, int64_t vocab) {
  return vocab > 0 && max_token_of(token_dtype(src)) >= vocab;
}

[[noreturn]] void fail_token_outside_vocab(const TokenSource& src, int64_t offset, int32_t token,
                                           int64_t vocab) {
  const int64_t d = document_of(src, offset);
  fail("{}: token {} at offset {} of the token stream (document {}, its token {}) is not below "
       "the model's vocabulary size {} (--model.vocab): the data was tokenized for another "
       "vocabulary, or is damaged",
       token_data_path(src), token, offset, d, offset - document_start(src, d), vocab);
}

// Checks tokens [offset, offset + n) (read into `tokens`) against the vocabulary.
void check_tokens(const TokenSource& src, int64_t offset, const int32_t* tokens, int64_t n,
                  int64_t vocab) {
  for (int64_t t = 0; t < n; ++t)
    if (tokens[t] >= vocab) fail_token_outside_vocab(src, offset + t, tokens[t], vocab);
}

// One parallel pass over a whole source: the first token at or above the vocabulary fails.
void scan_for_vocab(const TokenSource& src, int64_t vocab) {
  const int64_t n = num_tokens(src), block = int64_t{1} << 16;
  const int64_t blocks = (n + block - 1) / block;
  int64_t first_bad = n;
#pragma omp parallel
  {
    std::vector<int32_t> buf(block);
#pragma omp for schedule(static) reduction(min : first_bad)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t at = b * block, m = std::min(block, n - at);
      read_tokens(src, at, m, buf.data());
      for (int64_t t = 0; t < m; ++t)
        if (buf[t] >= vocab) {
          first_bad = std::min(first_bad, at + t);
          break;
        }
    }
  }
  if (first_bad < n) {
    int32_t token = 0;
    read_tokens(src, first_bad, 1, &token);
    fail_token_outside_vocab(src, first_bad, token, vocab);
  }
}

}  // namespace

std::vector<uint64_t> blend_units_of(const std::vector<double>& weights) {
  SAMBAY_CHECK(!weights.empty(), "blending needs at least one weight");
  double total = 0;
  for (size_t k = 0; k < weights.size(); ++k) {
    SAMBAY_CHECK(std::isfinite(weights[k]) && weights[k] > 0,
                 "weight {} of source {} must be positive and finite", weights[k], k);
    total += weights[k];
  }
  std::vector<uint64_t> units(weights.size());
  for (size_t k = 0; k < weights.size(); ++k)
    units[k] = std::max<uint64_t>(
        1, static_cast<uint64_t>(std::llround(weights[k] / total * 4294967296.0)));
  return units;
}

BlendPick blend_pick(const std::vector<uint64_t>& units, int64_t sample) {
  SAMBAY_CHECK(sample >= 0, "sample index {} is negative", sample);
  const int64_t K = static_cast<int64_t>(units.size());
  SAMBAY_CHECK(K > 0, "blending needs at least one source");
  int64_t lo = 0, hi = K;
  uint64_t m = static_cast<uint64_t>(sample);  // the sample's number among this node's samples
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    unsigned __int128 left = 0, all = 0;
    for (int64_t k = lo; k < hi; ++k) (k < mid ? left : all) += units[k];
    all += left;
    // Of this node's first j samples, round(j * left / all) go left (halves round up).
    auto to_left = [&](uint64_t j) {
      return static_cast<uint64_t>((2 * j * left + all) / (2 * all));
    };
    const uint64_t before = to_left(m);
    if (to_left(m + 1) > before) {
      hi = mid;
      m = before;
    } else {
      lo = mid;
      m -= before;
    }
  }
  return {lo, static_cast<int64_t>(m)};
}

Sampler open_sampler(const SamplerConfig& config) {
  SAMBAY_CHECK(!config.sources.empty(), "the sampler needs at least one data source");
  SAMBAY_CHECK(config.seq_len >= 1, "seq_len = {} must be at least 1", config.seq_len);
  SAMBAY_CHECK(config.valid_fraction >= 0 && config.valid_fraction < 1,
               "valid_fraction = {} must be in [0, 1)", config.valid_fraction);
  Sampler s;
  s.config = config;
  std::vector<double> weights;
  const int64_t L = config.seq_len;
  SAMBAY_CHECK(config.vocab >= 0, "vocab = {} must be >= 0", config.vocab);
  for (const DataSourceSpec& spec : config.sources) {
    s.sources.push_back(open_token_source(spec.path));
    const int64_t n = num_tokens(s.sources.back());
    if (may_exceed(s.sources.back(), config.vocab) && n <= config.vocab_scan_tokens)
      scan_for_vocab(s.sources.back(), config.vocab);
    const int64_t chunks = n >= 1 ? (n - 1) / L : 0;
    const int64_t need = config.valid_fraction > 0 ? 2 : 1;
    if (chunks < need)
      fail("{}: {} tokens make {} chunks of seq_len + 1 = {} tokens; need at least {}{}", spec.path,
           n, chunks, L + 1, need, need == 2 ? " (one for training, one for validation)" : "");
    int64_t valid = 0;
    if (config.valid_fraction > 0)
      valid = std::clamp<int64_t>(std::llround(config.valid_fraction * static_cast<double>(chunks)),
                                  1, chunks - 1);
    s.num_chunks.push_back(chunks);
    s.num_valid.push_back(valid);
    weights.push_back(spec.weight);
  }
  s.blend_units = blend_units_of(weights);
  return s;
}

int64_t samples_available(const Sampler& s, Split split) {
  int64_t total = 0;
  for (size_t k = 0; k < s.sources.size(); ++k)
    total += split_size(s, static_cast<int64_t>(k), split);
  return total;
}

SampleLocation locate_sample(const Sampler& s, Split split, int64_t sample) {
  SAMBAY_CHECK(sample >= 0, "sample index {} is negative", sample);
  if (split == Split::valid && samples_available(s, split) == 0)
    fail("there is no validation split (valid_fraction = {})", s.config.valid_fraction);
  const BlendPick pick = blend_pick(s.blend_units, sample);
  const int64_t k = pick.source;
  const uint64_t seed = s.config.seed;
  const int64_t size = split_size(s, k, split);
  const int64_t epoch = pick.index / size;
  const uint64_t epoch_tag = split == Split::valid ? kTagValidEpoch : kTagTrainEpoch;
  const uint64_t in_split =
      permute_index(static_cast<uint64_t>(pick.index % size), static_cast<uint64_t>(size),
                    derive_key(seed, epoch_tag, k, static_cast<uint64_t>(epoch)));
  const uint64_t listed =
      split == Split::valid ? s.num_chunks[k] - s.num_valid[k] + in_split : in_split;
  // The split permutation does not depend on the source, so a file listed twice (say, under two
  // weights) splits the same way in both places.
  const uint64_t chunk = permute_index(listed, static_cast<uint64_t>(s.num_chunks[k]),
                                       derive_key(seed, kTagSplit, 0, 0));
  return {k, static_cast<int64_t>(chunk), epoch};
}

void fill_samples(const Sampler& s, Split split, int64_t first_sample, int64_t count,
                  int32_t* tokens, int32_t* targets, int32_t* doc) {
  SAMBAY_CHECK(first_sample >= 0 && count >= 0, "{} samples [{}, {} + {}) out of range",
               split_name(split), first_sample, first_sample, count);
  const int64_t L = s.config.seq_len;
  // Errors (a corrupt token) cannot leave an OpenMP loop: keep the first and rethrow after it.
  std::exception_ptr error;
#pragma omp parallel
  {
    std::vector<int32_t> chunk(L + 1);
#pragma omp for schedule(dynamic)
    for (int64_t i = 0; i < count; ++i) {
      try {
        const SampleLocation at = locate_sample(s, split, first_sample + i);
        const TokenSource& src = s.sources[at.source];
        const int64_t start = at.chunk * L;
        read_tokens(src, start, L + 1, chunk.data());
        if (may_exceed(src, s.config.vocab))
          check_tokens(src, start, chunk.data(), L + 1, s.config.vocab);
        std::copy(chunk.begin(), chunk.begin() + L, tokens + i * L);
        std::copy(chunk.begin() + 1, chunk.end(), targets + i * L);
        if (doc) fill_document_ids(src, start, L, doc + i * L);
      } catch (...) {
#pragma omp critical(sambay_fill_samples_error)
        if (!error) error = std::current_exception();
      }
    }
  }
  if (error) std::rethrow_exception(error);
}

SampleRange data_parallel_slice(int64_t step, int64_t global_batch, int64_t rank, int64_t ranks) {
  SAMBAY_CHECK(step >= 0, "step {} is negative", step);
  SAMBAY_CHECK(ranks >= 1 && rank >= 0 && rank < ranks, "rank {} of {} ranks", rank, ranks);
  SAMBAY_CHECK(global_batch >= 1 && global_batch % ranks == 0,
               "global batch {} is not divisible by {} data-parallel ranks", global_batch, ranks);
  const int64_t per_rank = global_batch / ranks;
  return {step * global_batch + rank * per_rank, per_rank};
}

}  // namespace sambay
