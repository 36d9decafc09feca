// GPU tests run only where a CUDA device exists; elsewhere they skip and say why.
#pragma once

#include "core/cuda_runtime.h"

#include <gtest/gtest.h>

#define SAMBAY_REQUIRE_GPU()                                                                  \
  do {                                                                                        \
    if (!::sambay::built_with_cuda())                                                         \
      GTEST_SKIP() << "GPU test skipped: this build has no CUDA backend (SAMBAY_CUDA=OFF or " \
                      "no nvcc)";                                                             \
    if (::sambay::cuda_device_count() == 0)                                                   \
      GTEST_SKIP() << "GPU test skipped: no CUDA device on this machine; run it on the GPU "  \
                      "machine";                                                              \
  } while (0)
