// Optional timing of a GPU step by op family: CUDA events recorded around each family's work on
// the model's stream, summed after the step. Off (a null profile) unless a benchmark asks.
#pragma once

#include "core/cuda_stream.h"

#include <array>
#include <string>
#include <vector>

namespace sambay {

enum class OpFamily {
  embedding,
  norm,             // LayerNorm/RMSNorm, fused with the residual adds
  projection,       // the mixers' linear layers (GEMMs)
  mlp,              // fc1, SwiGLU, fc2
  conv,             // causal conv1d + SiLU
  scan,             // selective scan
  attention,        // attention and differential attention cores
  gmu,              // the GMU gate (its projections count as projection)
  loss,             // tied head + cross-entropy
  optimizer,        // zeroing the gradients, their norm, clipping, AdamW
  count
};
const char* op_family_name(OpFamily f);

struct GpuProfile {
  cudaStream_t stream = nullptr;
  struct Mark {
    OpFamily family;
    void* start;  // cudaEvent_t
    void* end;
  };
  std::vector<Mark> marks;  // events are created once and reused from step to step
  size_t used = 0;
  std::array<double, static_cast<size_t>(OpFamily::count)> ms{};  // accumulated
};

// Records the start of `family`'s work on the profile's stream; end_op records its end.
// A null profile does nothing.
void begin_op(GpuProfile* p, OpFamily family);
void end_op(GpuProfile* p);
// Synchronises, adds the elapsed times of the marks since the last collect into p->ms.
void collect_profile(GpuProfile* p);
void destroy_profile(GpuProfile* p);

// RAII form: the family's work is what the scope enqueues.
struct OpScope {
  GpuProfile* profile;
  OpScope(GpuProfile* p, OpFamily f) : profile(p) { begin_op(p, f); }
  ~OpScope() { end_op(profile); }
  OpScope(const OpScope&) = delete;
  OpScope& operator=(const OpScope&) = delete;
};

}  // namespace sambay
