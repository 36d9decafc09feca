#include "core/gpu_profile.h"

#include "core/check.h"
#include "core/cuda_check.h"

#include <cuda_runtime.h>

namespace sambay {

const char* op_family_name(OpFamily f) {
  switch (f) {
    case OpFamily::embedding: return "embedding";
    case OpFamily::norm: return "norms + residual";
    case OpFamily::projection: return "mixer projections";
    case OpFamily::mlp: return "MLP";
    case OpFamily::conv: return "conv1d + SiLU";
    case OpFamily::scan: return "selective scan";
    case OpFamily::attention: return "attention cores";
    case OpFamily::gmu: return "GMU gate";
    case OpFamily::loss: return "tied head + loss";
    case OpFamily::optimizer: return "optimizer";
    case OpFamily::count: break;
  }
  return "?";
}

void begin_op(GpuProfile* p, OpFamily family) {
  if (!p) return;
  if (p->used == p->marks.size()) {
    cudaEvent_t start, end;
    SAMBAY_CUDA_CHECK(cudaEventCreate(&start));
    SAMBAY_CUDA_CHECK(cudaEventCreate(&end));
    p->marks.push_back({family, start, end});
  }
  GpuProfile::Mark& m = p->marks[p->used];
  m.family = family;
  SAMBAY_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(m.start), p->stream));
}

void end_op(GpuProfile* p) {
  if (!p) return;
  SAMBAY_CUDA_CHECK(
      cudaEventRecord(static_cast<cudaEvent_t>(p->marks[p->used].end), p->stream));
  ++p->used;
}

void collect_profile(GpuProfile* p) {
  if (!p) return;
  SAMBAY_CUDA_CHECK(cudaStreamSynchronize(p->stream));
  for (size_t i = 0; i < p->used; ++i) {
    float ms = 0;
    SAMBAY_CUDA_CHECK(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(p->marks[i].start),
                                           static_cast<cudaEvent_t>(p->marks[i].end)));
    p->ms[static_cast<size_t>(p->marks[i].family)] += ms;
  }
  p->used = 0;
}

void destroy_profile(GpuProfile* p) {
  if (!p) return;
  for (GpuProfile::Mark& m : p->marks) {
    cudaEventDestroy(static_cast<cudaEvent_t>(m.start));
    cudaEventDestroy(static_cast<cudaEvent_t>(m.end));
  }
  p->marks.clear();
  p->used = 0;
}

}  // namespace sambay
