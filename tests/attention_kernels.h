// The attention tests' choice of implementation (kernels/attention.h): each case runs once per
// implementation, so a failure points at one of them.
#pragma once

#include "kernels/attention.h"

#include <vector>

namespace sambay::testing {

// Each attention test case once per implementation (kernels/attention.h): the automatic choice
// (the Hopper kernels on an sm_90 GPU), the mma.sync tensor-core kernels and the simple kernels,
// so a failure points at one implementation.
template <typename Case>
std::vector<Case> with_every_kernel(const std::vector<Case>& cases) {
  std::vector<Case> all;
  for (Case c : cases)
    for (AttentionKernels k :
         {AttentionKernels::automatic, AttentionKernels::mma_sync, AttentionKernels::simple}) {
      c.kernels = k;
      all.push_back(c);
    }
  return all;
}

inline const char* kernels_name(AttentionKernels k) {
  return k == AttentionKernels::automatic ? "auto"
         : k == AttentionKernels::mma_sync ? "mma_sync"
                                            : "simple";
}

// Sets the kernel choice for one test and restores the automatic choice when the test ends.
struct KernelChoice {
  explicit KernelChoice(AttentionKernels k) { attention_cuda_force_kernels(k); }
  ~KernelChoice() { attention_cuda_force_kernels(AttentionKernels::automatic); }
  KernelChoice(const KernelChoice&) = delete;
  KernelChoice& operator=(const KernelChoice&) = delete;
};

}  // namespace sambay::testing
