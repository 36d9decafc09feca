// Data parallelism with a sharded optimizer (ZeRO stage 1).
//
// Every DP rank holds all parameters and computes gradients on its slice of the global batch
// (io/sampler.h data_parallel_slice), each scaled by 1 / (valid targets of the GLOBAL batch),
// so the sum over ranks is the single-rank gradient. Then:
//   1. reduce_gradients: the flat gradient buffer is reduce-scattered bucket by bucket; each
//      rank receives the summed gradient of the values it owns;
//   2. sharded_grad_norm: sum of squares of the owned values, all-reduced: the global norm;
//   3. sharded_adamw_step: the owned gradients are clipped, AdamW updates the owned
//      parameters with the owned moments, and the parameters are all-gathered bucket by bucket.
// So each rank keeps AdamW moments (and the reduced gradient) for 1/DP of the parameters.
//
// Ownership (Megatron's distributed-optimizer layout): the flat buffer [total] is cut into
// buckets of bucket_size values (rounded up to a multiple of the rank count); bucket b is
// split into `ranks` equal pieces and rank r owns piece r of every bucket. The last bucket is
// padded with zeros to a multiple of the rank count, so its last pieces may be short or empty.
// Bucket-sized collectives are what later lets a bucket's reduction start while backward still
// computes the rest (with CUDA streams); on the CPU they run after backward.
//
// The buffers here are host memory (the CPU trainer); the communicator may be any backend whose
// buffers are host memory (mpi).
#pragma once

#include "core/param_layout.h"
#include "optim/adamw.h"
#include "optim/mup.h"
#include "parallel/communicator.h"

#include <cstdint>
#include <vector>

namespace sambay {

// The optimizer multipliers of one parameter tensor: muP++ learning rate, and weight decay
// (under muP++ none for the embedding, an untied readout and vectors; without it every tensor
// is decayed, as ArchScale's standard parameterisation does).
struct ParamGroup {
  int64_t offset, numel;  // in the flat buffer
  double lr_mult, wd_mult;
  bool whole_on_tp_ranks = false;  // every TP rank holds the whole tensor (ParamSpec::tp_dim < 0)
};
std::vector<ParamGroup> param_groups(const ParamLayout& layout, const MupConfig& mup);

struct ShardBucket {
  int64_t begin;         // first value of the bucket in the flat buffer
  int64_t size;          // values in the bucket (the last one may be short)
  int64_t piece;         // values each rank owns: ceil(size / ranks)
  int64_t shard_offset;  // where this rank's piece starts in the shard buffers
};

struct ShardLayout {
  int64_t total = 0;
  int ranks = 1, rank = 0;
  std::vector<ShardBucket> buckets;
  int64_t shard_size = 0;  // sum of the pieces: length of this rank's shard buffers
};

// bucket_size > 0 values (rounded up to a multiple of ranks).
ShardLayout make_shard_layout(int64_t total, int64_t bucket_size, int ranks, int rank);

// The values of bucket b that rank `owner` owns: [begin, end) in the flat buffer (end may
// equal begin in a padded bucket).
struct FlatRange {
  int64_t begin, end;
};
FlatRange owned_range(const ShardLayout& layout, const ShardBucket& bucket, int owner);

// full [total] (this rank's contribution) -> shard [shard_size]: this rank's pieces of the sum
// over ranks (padding positions hold zero). staging: scratch for the padded bucket.
template <typename T>
void reduce_scatter_buckets(const Communicator& c, const ShardLayout& layout, const T* full,
                            T* shard, std::vector<T>& staging);

// In place on full [total]: before, each rank's owned values of full hold that rank's result;
// after, every rank's full holds all of them.
template <typename T>
void all_gather_buckets(const Communicator& c, const ShardLayout& layout, T* full,
                        std::vector<T>& staging);

// sum of g^2 over the owned values of shard [shard_size], in double, in fixed blocks (the
// result does not depend on the thread count).
template <typename T>
double shard_sum_of_squares(const ShardLayout& layout, const T* shard);

// One run of owned values inside one parameter group: AdamW is applied per segment with that
// group's learning rate and weight decay.
struct ShardSegment {
  int64_t flat, shard, n;  // start in the flat buffer, start in the shard buffers, length
  int group;
};

// The owned values of `layout` cut at group boundaries, in flat order (groups must tile
// [0, layout.total) in order; throws otherwise).
std::vector<ShardSegment> shard_segments(const ShardLayout& layout,
                                         const std::vector<ParamGroup>& groups);

// AdamW on fp32 parameters whose gradients and moments are sharded as above.
struct ShardedAdamW {
  const Communicator* comm = nullptr;  // the DP group (not owned)
  ShardLayout layout;
  std::vector<ParamGroup> groups;
  std::vector<ShardSegment> segments;
  std::vector<float> grad, m, v;  // [shard_size]: reduced gradient and moments of owned values
  std::vector<float> staging;
};

// groups must tile [0, total) in order. bucket_size as in make_shard_layout.
ShardedAdamW make_sharded_adamw(const Communicator& dp, int64_t total,
                                std::vector<ParamGroup> groups, int64_t bucket_size);

// grads [total]: this rank's (already globally scaled) gradient; afterwards opt.grad holds the
// summed gradient of the owned values. grads itself is unchanged.
void reduce_gradients(ShardedAdamW& opt, const float* grads);

// The L2 norm of the full summed gradient (identical on every rank). With tensor parallelism
// (tp non-null) the TP ranks hold different shards: their sums of squares are added, each whole
// tensor (the same on every TP rank) counted on TP rank 0 only.
double sharded_grad_norm(const ShardedAdamW& opt, const Communicator* tp = nullptr);

// Multiplies the owned gradients by clip_coef, applies AdamW to the owned parameters (base.lr
// and base.weight_decay times each group's multipliers), then all-gathers params [total].
void sharded_adamw_step(ShardedAdamW& opt, float* params, double clip_coef, const AdamWHyper& base,
                        int64_t step);

// Checkpoints hold whole tensors. gather_moments fills m_full and v_full [total] with every
// rank's moments (a collective: every rank calls it); scatter_moments takes this rank's pieces
// back from whole tensors (after a load).
void gather_moments(ShardedAdamW& opt, std::vector<float>& m_full, std::vector<float>& v_full);
void scatter_moments(ShardedAdamW& opt, const std::vector<float>& m_full,
                     const std::vector<float>& v_full);

}  // namespace sambay
