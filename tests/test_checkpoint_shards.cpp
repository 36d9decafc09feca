// Checkpoints written by every rank of a parallel layout (each rank its own pieces, the index
// joining them) and read back under any layout: what the trainer does under mpirun, with the
// ranks simulated in one process so that every layout is covered quickly.
#include "core/param_layout.h"
#include "io/checkpoint.h"
#include "io/checkpoint_shards.h"
#include "launch/checkpoint_writer.h"
#include "optim/mup.h"
#include "parallel/data_parallel.h"
#include "tests/io_test_util.h"

#include <fmt/format.h>

#include <cstring>
#include <random>

namespace sambay {
namespace {

using testing::ScratchDir;

ModelConfig tp_friendly_model() {
  ModelConfig c = model_preset("tiny-sambay-da");
  c.vocab = 257;
  c.n_heads = 8;
  c.n_kv_heads = 4;
  return c;
}

// A layout: tp ranks per model replica, zero ranks sharing the optimizer, and a bucket that
// cuts the tensors at odd places (pieces start and end inside rows).
struct Layout {
  int tp, zero;
  int64_t bucket;
  int world() const { return tp * zero; }
  std::string name() const { return fmt::format("tp{}_zero{}_bucket{}", tp, zero, bucket); }
};

bool same_bits(const float* a, const float* b, int64_t n) {
  return std::memcmp(a, b, sizeof(float) * n) == 0;
}

// One simulated rank: its TP shard of the whole state, and the values it owns.
struct Rank {
  int tp_rank, zero_rank;
  RankOwnership owned;
  std::vector<float> params;            // the TP shard
  std::vector<float> own_p, own_m, own_v;  // the owned values (moments of its ZeRO pieces)
};

struct Whole {
  ModelConfig model;
  ParamLayout layout;
  std::vector<float> params, m, v;
  Whole() : model(tp_friendly_model()), layout(build_param_layout(model)) {
    params.resize(layout.total), m.resize(layout.total), v.resize(layout.total);
    std::mt19937 rng(3);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (int64_t i = 0; i < layout.total; ++i) {
      params[i] = normal(rng);
      m[i] = normal(rng) * 1e-3f;
      v[i] = m[i] * m[i] + 1e-9f * float(i % 97);
    }
  }
};

std::vector<Rank> ranks_of(const Whole& w, const Layout& l) {
  const ParamLayout shard = build_param_layout(l.tp > 1 ? tensor_parallel_config(w.model, l.tp)
                                                        : w.model);
  std::vector<Rank> out;
  for (int r = 0; r < l.world(); ++r) {
    Rank k;
    k.tp_rank = r % l.tp, k.zero_rank = r / l.tp;
    k.owned = ownership_of(make_shard_layout(shard.total, l.bucket, l.zero, k.zero_rank), l.tp,
                           k.tp_rank);
    k.params.resize(shard.total);
    std::vector<float> m(shard.total), v(shard.total);
    shard_params(w.layout, shard, w.params.data(), k.params.data(), l.tp, k.tp_rank);
    shard_params(w.layout, shard, w.m.data(), m.data(), l.tp, k.tp_rank);
    shard_params(w.layout, shard, w.v.data(), v.data(), l.tp, k.tp_rank);
    k.own_p.assign(k.owned.buffer_size, 0.0f);
    k.own_m.assign(k.owned.buffer_size, 0.0f);
    k.own_v.assign(k.owned.buffer_size, 0.0f);
    for (const OwnedRange& o : k.owned.ranges)
      for (int64_t i = o.begin; i < o.end; ++i) {
        k.own_p[o.pos + i - o.begin] = k.params[i];
        k.own_m[o.pos + i - o.begin] = m[i];
        k.own_v[o.pos + i - o.begin] = v[i];
      }
    out.push_back(std::move(k));
  }
  return out;
}

// Every rank writes its file, rank 0 the index and the commit: the trainer's protocol.
std::string save_sharded(const Whole& w, const Layout& l, const std::string& dir) {
  const std::vector<Rank> ranks = ranks_of(w, l);
  const ParamLayout shard = build_param_layout(l.tp > 1 ? tensor_parallel_config(w.model, l.tp)
                                                        : w.model);
  std::vector<std::vector<StoredPiece>> pieces;
  for (const Rank& k : ranks) pieces.push_back(owned_pieces(w.layout, shard, k.owned));
  TrainState state;
  state.step = 5;
  state.seq_len = 32;
  state.global_batch = 4;
  state.total_steps = 10;
  const CheckpointMeta meta{w.model, "lr = 0.001\n", state, new_run_id(),
                            {l.zero, l.tp, 1}};
  const std::string tmp = begin_checkpoint(dir, 5, 12.0 * double(w.layout.total));
  std::vector<RankFileResult> files;
  for (int r = 0; r < l.world(); ++r)
    files.push_back(write_rank_file(
        tmp, meta, {r, &pieces[r], ranks[r].own_p, ranks[r].own_m, ranks[r].own_v}));
  write_checkpoint_index(tmp, meta, pieces);
  return commit_checkpoint(dir, meta, files, 1).dir;
}

const Layout kLayouts[] = {{1, 1, 1 << 20}, {1, 3, 701}, {2, 1, 1 << 20}, {2, 2, 523}, {2, 3, 1999}};

TEST(CheckpointShards, EveryLayoutSavesEachValueOnceAndLoadsBackWholeBitExactly) {
  const Whole w;
  for (const Layout& l : kLayouts) {
    SCOPED_TRACE(l.name());
    ScratchDir dir;
    const std::string step_dir = save_sharded(w, l, dir.file("ckpt"));
    // The index's pieces tile every tensor (read_checkpoint_info checks that they are disjoint
    // and cover it), one rank file per rank.
    const CheckpointInfo info = read_checkpoint_info(step_dir);
    EXPECT_EQ(info.format_version, kCheckpointFormatVersion);
    EXPECT_EQ(info.parallel.world_size(), l.world());
    EXPECT_EQ(info.parallel.tp, l.tp);
    // No value is stored twice: the rank files together hold 3 x the model's values.
    int64_t stored = 0;
    for (const GlobalTensor& t : info.tensors)
      for (const ShardPiece& p : t.pieces) stored += p.box.numel();
    EXPECT_EQ(stored, 3 * w.layout.total);
    const LoadedCheckpoint whole = load_checkpoint(step_dir, w.model);
    EXPECT_TRUE(same_bits(whole.params.data(), w.params.data(), w.layout.total));
    EXPECT_TRUE(same_bits(whole.adam_m.data(), w.m.data(), w.layout.total));
    EXPECT_TRUE(same_bits(whole.adam_v.data(), w.v.data(), w.layout.total));
  }
}

TEST(CheckpointShards, EachRankOfAnotherLayoutLoadsExactlyItsShardAndItsOwnedMoments) {
  const Whole w;
  ScratchDir dir;
  const std::string step_dir = save_sharded(w, {2, 2, 523}, dir.file("ckpt"));
  for (const Layout& l : kLayouts) {
    SCOPED_TRACE(l.name());
    const ParamLayout shard = build_param_layout(l.tp > 1 ? tensor_parallel_config(w.model, l.tp)
                                                          : w.model);
    for (const Rank& want : ranks_of(w, l)) {
      SCOPED_TRACE(fmt::format("tp rank {}, zero rank {}", want.tp_rank, want.zero_rank));
      std::vector<float> params(shard.total, -1.0f), staging;
      std::vector<float> m(want.owned.buffer_size, -1.0f), v(want.owned.buffer_size, -1.0f);
      std::vector<int> loaded;
      RankLoadTargets t;
      t.tp = l.tp, t.tp_rank = want.tp_rank;
      // Through a one-tensor staging buffer, as the GPU trainer loads.
      t.params_at = [&](int i) {
        staging.assign(shard.params[i].numel, -1.0f);
        return staging.data();
      };
      t.params_loaded = [&](int i) {
        std::copy(staging.begin(), staging.end(), params.begin() + shard.params[i].offset);
        loaded.push_back(i);
      };
      t.moments = want.owned;
      t.adam_m = m, t.adam_v = v;
      load_checkpoint_part(step_dir, w.model, t);
      EXPECT_EQ(loaded.size(), shard.params.size());
      EXPECT_TRUE(same_bits(params.data(), want.params.data(), shard.total));
      for (const OwnedRange& o : want.owned.ranges) {
        EXPECT_TRUE(same_bits(m.data() + o.pos, want.own_m.data() + o.pos, o.end - o.begin));
        EXPECT_TRUE(same_bits(v.data() + o.pos, want.own_v.data() + o.pos, o.end - o.begin));
      }
    }
  }
}

TEST(CheckpointShards, PiecesOfARangeTileItInFlatOrder) {
  // A flat range of a 3-D tensor that starts and ends inside rows of its inner dimensions.
  ParamSpec p;
  p.name = "x";
  p.shape = {3, 4, 5};
  p.numel = 60;
  p.offset = 100;
  p.tp_dim = -1;
  for (int64_t a = 0; a <= 60; a += 7)
    for (int64_t b = a; b <= 60; b += 11) {
      std::vector<StoredPiece> pieces;
      append_range_pieces(p, p, 0, 1, 0, 100 + a, 100 + b, 1000, pieces);
      std::vector<int> seen(60, 0);
      int64_t pos = 1000;
      for (const StoredPiece& s : pieces) {
        EXPECT_EQ(s.pos, pos);  // consecutive in the buffer
        for (int64_t i = 0; i < s.box.shape[0]; ++i)
          for (int64_t j = 0; j < s.box.shape[1]; ++j)
            for (int64_t k = 0; k < s.box.shape[2]; ++k) {
              const int64_t flat =
                  (s.box.offset[0] + i) * 20 + (s.box.offset[1] + j) * 5 + s.box.offset[2] + k;
              // Row-major inside the box is flat order of the tensor.
              EXPECT_EQ(flat - a, pos - 1000 + (i * s.box.shape[1] + j) * s.box.shape[2] + k);
              ++seen[flat];
            }
        pos += s.box.numel();
      }
      for (int64_t i = 0; i < 60; ++i) EXPECT_EQ(seen[i], i >= a && i < b ? 1 : 0) << a << " " << b;
      EXPECT_LE(pieces.size(), 5u) << a << " " << b;  // head, middle, tail per level
    }
}

// Each rank initialises its TP shard in place (the GPU trainer a tensor at a time): the values
// must be those the whole model's initialisation puts there, for every init rule.
TEST(CheckpointShards, AShardInitialisedInPlaceIsTheShardOfTheWholeModelsInit) {
  for (const InitRule init : {InitRule::normal, InitRule::archscale}) {
    ModelConfig c = tp_friendly_model();
    c.init = init;
    ParamLayout full = build_param_layout(c);
    apply_init_rules(full, c);
    std::vector<float> whole(full.total);
    init_params(full, whole.data(), 17);
    for (int tp : {1, 2}) {
      const ParamLayout shard = build_param_layout(tp > 1 ? tensor_parallel_config(c, tp) : c);
      for (int rank = 0; rank < tp; ++rank) {
        SCOPED_TRACE(fmt::format("init rule {}, tp {}, rank {}", int(init), tp, rank));
        std::vector<float> want(shard.total), in_place(shard.total, -7.0f), tensor;
        shard_params(full, shard, whole.data(), want.data(), tp, rank);
        init_params_shard(full, shard, in_place.data(), 17, tp, rank);
        EXPECT_TRUE(same_bits(in_place.data(), want.data(), shard.total));
        for (size_t i = 0; i < shard.params.size(); ++i) {
          tensor.assign(shard.params[i].numel, -7.0f);
          init_shard_tensor(full.params[i], shard.params[i], tensor.data(), 17, tp, rank);
          EXPECT_TRUE(same_bits(tensor.data(), want.data() + shard.params[i].offset,
                                shard.params[i].numel))
              << shard.params[i].name;
        }
      }
    }
  }
}

}  // namespace
}  // namespace sambay
