// Tensor maps through the driver entry point (the runtime does not wrap cuTensorMapEncodeTiled),
// so that nothing links libcuda directly.
#include "kernels/sm90/tensor_map.h"

#include "core/cuda_check.h"
#include "kernels/cuda_errors.h"

#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <mutex>
#include <string>

namespace sambay::sm90 {
namespace {

PFN_cuTensorMapEncodeTiled_v12000 encode_fn() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = nullptr;
  static std::once_flag once;
  std::call_once(once, [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q{};
    SAMBAY_CUDA_CHECK(
        cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q));
    SAMBAY_CUDA_ARG_CHECK(q == cudaDriverEntryPointSuccess && p != nullptr,
                          std::string("the CUDA driver has no cuTensorMapEncodeTiled"));
    fn = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  });
  return fn;
}

}  // namespace

bool tma_compatible(const void* base, int64_t head_stride, int64_t pos_stride) {
  return reinterpret_cast<uintptr_t>(base) % 16 == 0 && head_stride % 8 == 0 &&
         pos_stride % 8 == 0;
}

CUtensorMap make_head_tensor_map(const HeadTensor& t, int rows, const char* what) {
  const std::string name(what);
  SAMBAY_CUDA_ARG_CHECK(reinterpret_cast<uintptr_t>(t.base) % 16 == 0,
                        name + ": base address is not 16-byte aligned");
  SAMBAY_CUDA_ARG_CHECK(t.d % 64 == 0, name + ": d = " + std::to_string(t.d) +
                                           " is not a multiple of 64");
  SAMBAY_CUDA_ARG_CHECK(t.head_stride % 8 == 0 && t.pos_stride % 8 == 0 && t.batch_stride % 8 == 0,
                        name + ": strides (" + std::to_string(t.head_stride) + ", " +
                            std::to_string(t.pos_stride) + ", " + std::to_string(t.batch_stride) +
                            ") are not multiples of 8 elements");
  SAMBAY_CUDA_ARG_CHECK(rows >= 1 && rows <= 256, name + ": box rows out of range");
  const cuuint64_t dims[4] = {cuuint64_t(t.d), cuuint64_t(t.heads), cuuint64_t(t.positions),
                              cuuint64_t(t.batch)};
  const cuuint64_t strides[3] = {cuuint64_t(t.head_stride) * 2, cuuint64_t(t.pos_stride) * 2,
                                 cuuint64_t(t.batch_stride) * 2};
  const cuuint32_t box[4] = {64, 1, cuuint32_t(rows), 1};
  const cuuint32_t elem_strides[4] = {1, 1, 1, 1};
  CUtensorMap map;
  const CUresult r = encode_fn()(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 4, const_cast<void*>(t.base),
                                 dims, strides, box, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                 CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                 CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  SAMBAY_CUDA_ARG_CHECK(r == CUDA_SUCCESS, name + ": cuTensorMapEncodeTiled failed with error " +
                                               std::to_string(int(r)));
  return map;
}

}  // namespace sambay::sm90
