// The training sampler: a pure function from (config, split, sample index) to a training
// sequence, so that resuming at any step, on any number of ranks, needs only the step number.
//
// 1. Chunks. Each source's token stream (documents packed back to back) is cut into chunks of
//    seq_len + 1 tokens at a stride of seq_len: chunk c is tokens [c*L, c*L + L + 1). Its first
//    L tokens are the inputs and its last L the targets, so consecutive chunks share one token
//    and every token after the first is a target exactly once. num_chunks = (tokens - 1) / L.
// 2. Split. A fixed pseudo-random permutation of [0, num_chunks) (io/permutation.h, keyed by the
//    seed alone, so the same file always splits the same way) lists the chunks; the first num_chunks - V entries are the training
//    split and the last V = round(valid_fraction * num_chunks) the validation split. No chunk
//    is in both, and no token is a target in both.
// 3. Epochs. The j-th sample drawn from a source's split of M chunks is in epoch e = j / M; its
//    position (j mod M) goes through a permutation of [0, M) keyed by (seed, source, split, e),
//    so every epoch visits each chunk of the split once, in a new order.
// 4. Blending. Global sample i goes to a source in closed form, O(K) per sample for K
//    sources, with no history: the sources form a balanced binary tree and at each node the
//    first m samples reaching it send round(m * W_left / W_node) to the left subtree (W: summed
//    weights, in units of 2^-32 of the total). Each source's samples are numbered 0, 1, 2, ...
//    without gaps, and after any n samples source k has had w_k * n of them to within
//    ceil(log2 K) / 2 (w_k: its weight rounded to 2^-32). For two sources this is exactly
//    Megatron's rule: sample i goes to the source with the largest w_k * (i + 1) - count_k
//    (the first source on ties).
// 5. Data parallelism. Step s consumes global samples [s*G, (s+1)*G); rank r of R reads the
//    contiguous slice data_parallel_slice(s, G, r, R). The batch does not depend on R.
#pragma once

#include "io/token_source.h"

#include <cstdint>
#include <string>
#include <vector>

namespace sambay {

struct DataSourceSpec {
  std::string path;  // any path open_token_source accepts
  double weight;     // > 0; relative to the other sources
};

// "path" or "path:weight" (a trailing ":number" is the weight), as --data takes it. Throws
// naming the option when the weight is not a finite positive number.
DataSourceSpec parse_data_source(const std::string& entry);

struct SamplerConfig {
  std::vector<DataSourceSpec> sources;
  int64_t seq_len;
  uint64_t seed;
  double valid_fraction;  // in [0, 1); 0 means no validation split
  // Token ids must be below this (the model's vocabulary); 0: not checked. A token at or above
  // it fails naming the file, the document and the offset: at open for sources of at most
  // vocab_scan_tokens tokens (one parallel pass, about a second per 2^28 tokens on a few
  // cores), when a sample is read otherwise (every sample's tokens are checked).
  int64_t vocab = 0;
  int64_t vocab_scan_tokens = int64_t{1} << 28;
};

enum class Split { train, valid };

struct Sampler {
  SamplerConfig config;
  std::vector<TokenSource> sources;
  std::vector<int64_t> num_chunks;    // per source
  std::vector<int64_t> num_valid;     // per source: chunks in the validation split
  std::vector<uint64_t> blend_units;  // per source: weight in units of 2^-32 of the total
};

// Opens every source and checks the config; throws naming the source that is too short, or
// (config.vocab) holds a token id outside the vocabulary.
Sampler open_sampler(const SamplerConfig& config);

// The samples in one pass over the split: the sum over sources of their split's chunks. Any
// sample index >= 0 is valid; a source whose chunks run out starts its next epoch.
int64_t samples_available(const Sampler& sampler, Split split);

// Where a sample comes from.
struct SampleLocation {
  int64_t source;  // index into config.sources
  int64_t chunk;   // tokens [chunk * seq_len, chunk * seq_len + seq_len + 1) of that source
  int64_t epoch;   // of that source's split
};
SampleLocation locate_sample(const Sampler& sampler, Split split, int64_t sample);

// Samples [first_sample, first_sample + count) of the split, each [seq_len]:
//   tokens[i, t]  = chunk token t,  targets[i, t] = chunk token t + 1,
//   doc[i, t]     = which document token t belongs to, counted from 0 within sample i (it grows
//                   by one at each document start), for resetting scan state and masking
//                   attention.
// tokens, targets, doc: [count, seq_len]. doc may be null.
void fill_samples(const Sampler& sampler, Split split, int64_t first_sample, int64_t count,
                  int32_t* tokens, int32_t* targets, int32_t* doc);

// Blending alone: the source of global sample `sample` and its number among that source's
// samples (0, 1, 2, ... in order of the global index).
struct BlendPick {
  int64_t source;
  int64_t index;
};
BlendPick blend_pick(const std::vector<uint64_t>& blend_units, int64_t sample);
// Weights (> 0) in units of 2^-32 of their sum, as blend_pick takes them.
std::vector<uint64_t> blend_units_of(const std::vector<double>& weights);

// Rank `rank` of `ranks`: its contiguous share of step `step`'s global batch. global_batch must
// be divisible by ranks.
struct SampleRange {
  int64_t first;
  int64_t count;
};
SampleRange data_parallel_slice(int64_t step, int64_t global_batch, int64_t rank, int64_t ranks);

}  // namespace sambay
