// bf16 GEMM through cuBLASLt, with the row-major conventions of the CPU gemm.
//
// cuBLASLt is column-major. A row-major C[m, n] with leading dimension ldc is, read column-major,
// the matrix C^T[n, m] with the same leading dimension, and C^T = op(B)^T op(A)^T. So each call
// hands cuBLASLt the problem (n x m x k) with our B as its first operand and our A as its second,
// each keeping its own transpose flag, and the bias (one value per column of our C) becomes the
// per-row bias of cuBLASLt's D, which is exactly what its BIAS epilogue adds.
#include "kernels/gemm.h"

#include <cublasLt.h>
#include <cublas_v2.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <unordered_map>

#include "kernels/cuda_util.cuh"

#define SAMBAY_CUBLAS_CHECK(expr)                                                          \
  do {                                                                                     \
    const cublasStatus_t sambay_status_ = (expr);                                          \
    if (sambay_status_ != CUBLAS_STATUS_SUCCESS)                                           \
      ::sambay::fail_message(std::string(__FILE__) + ":" + std::to_string(__LINE__) + ": " \
                             #expr " failed: " + cublasLtGetStatusName(sambay_status_) +   \
                             " (" + cublasLtGetStatusString(sambay_status_) + ")");        \
  } while (0)

namespace sambay {
namespace {

constexpr size_t kWorkspaceBytes = size_t(32) << 20;

// Everything the algorithm choice depends on: the problem, the output type, the epilogue, and
// the alignment of every pointer (cuBLASLt's heuristic takes it into account; an algorithm chosen
// for aligned pointers must not be reused for unaligned ones).
struct PlanKey {
  bool trans_a, trans_b, f32_out, bias;
  int64_t m, n, k, lda, ldb, ldc;
  uint32_t align_a, align_b, align_c, align_bias;
  bool operator==(const PlanKey&) const = default;
};

struct PlanKeyHash {
  size_t operator()(const PlanKey& key) const {
    size_t h = (size_t(key.trans_a) << 0) | (size_t(key.trans_b) << 1) |
               (size_t(key.f32_out) << 2) | (size_t(key.bias) << 3);
    for (int64_t v : {key.m, key.n, key.k, key.lda, key.ldb, key.ldc, int64_t(key.align_a),
                      int64_t(key.align_b), int64_t(key.align_c), int64_t(key.align_bias)})
      h = h * 0x9E3779B97F4A7C15ull + size_t(v);
    return h;
  }
};

struct Plan {
  cublasLtMatmulAlgo_t algo;
  // False when cuBLASLt has no algorithm for the fp32-bias epilogue with this output; the bias is
  // then added by a small kernel after the GEMM.
  bool bias_in_epilogue;
  // True when cuBLASLt's heuristic offers no algorithm at all (an unusual shape or alignment):
  // the GEMM then goes through classic cuBLAS (cublasGemmEx), which accepts every shape.
  bool use_cublas;
};

struct DeviceState {
  CublasLtDevice resources;
  cublasHandle_t cublas = nullptr;  // created when a shape first needs the fallback
  std::mutex mutex;                 // guards plans and cublas
  std::unordered_map<PlanKey, Plan, PlanKeyHash> plans;
};

#define SAMBAY_CUBLAS_V2_CHECK(expr)                                                        \
  do {                                                                                      \
    const cublasStatus_t sambay_status_ = (expr);                                           \
    if (sambay_status_ != CUBLAS_STATUS_SUCCESS)                                            \
      ::sambay::fail_message(std::string(__FILE__) + ":" + std::to_string(__LINE__) + ": "  \
                             #expr " failed: " + cublasGetStatusName(sambay_status_));     \
  } while (0)

DeviceState& device_state() {
  static std::mutex registry_mutex;
  static std::map<int, std::unique_ptr<DeviceState>> states;  // deliberately never destroyed
  int device = 0;
  SAMBAY_CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(registry_mutex);
  std::unique_ptr<DeviceState>& state = states[device];
  if (!state) {
    auto fresh = std::make_unique<DeviceState>();
    SAMBAY_CUBLAS_CHECK(cublasLtCreate(&fresh->resources.handle));
    SAMBAY_CUDA_CHECK(cudaMalloc(&fresh->resources.workspace, kWorkspaceBytes));
    fresh->resources.workspace_bytes = kWorkspaceBytes;
    state = std::move(fresh);
  }
  return *state;
}

// Largest power of two (at most 256) that divides the address.
uint32_t alignment(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  if (a == 0) return 256;
  const uintptr_t low = a & (~a + 1);
  return low >= 256 ? 256 : static_cast<uint32_t>(low);
}

// RAII owners of the cuBLASLt descriptors (host objects, consumed when the call is enqueued).
struct MatmulDesc {
  cublasLtMatmulDesc_t desc = nullptr;
  ~MatmulDesc() {
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
  template <typename V>
  void set(cublasLtMatmulDescAttributes_t attr, const V& value) {
    SAMBAY_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attr, &value, sizeof(value)));
  }
};
struct MatrixLayout {
  cublasLtMatrixLayout_t layout = nullptr;
  MatrixLayout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld) {
    SAMBAY_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout, type, uint64_t(rows), uint64_t(cols), ld));
  }
  ~MatrixLayout() {
    if (layout) cublasLtMatrixLayoutDestroy(layout);
  }
};
struct Preference {
  cublasLtMatmulPreference_t pref = nullptr;
  Preference() { SAMBAY_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref)); }
  ~Preference() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
  }
  template <typename V>
  void set(cublasLtMatmulPreferenceAttributes_t attr, const V& value) {
    SAMBAY_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &value, sizeof(value)));
  }
};

// c[i, j] = c_scale * c[i, j] + bias[j] over an m x n block with leading dimension ldc; c is not
// read when c_scale == 0. For the bias when the epilogue cannot add it, and for k == 0.
template <typename Out>
__global__ void scale_add_bias_kernel(Out* c, int64_t ldc, int64_t m, int64_t n, float c_scale,
                                      const float* bias) {
  const int64_t total = m * n;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = idx / n, j = idx % n;
    Out* p = c + i * ldc + j;
    float v = 0.0f;
    if (c_scale != 0.0f) {
      if constexpr (std::is_same_v<Out, float>)
        v = c_scale * *p;
      else
        v = c_scale * __bfloat162float(*p);
    }
    if (bias) v += bias[j];
    if constexpr (std::is_same_v<Out, float>)
      *p = v;
    else
      *p = __float2bfloat16_rn(v);
  }
}

template <typename Out>
void scale_add_bias(Out* c, int64_t ldc, int64_t m, int64_t n, float c_scale, const float* bias,
                    cudaStream_t stream) {
  const int threads = 256;
  scale_add_bias_kernel<Out><<<cuda::grid_size(m * n, threads, 8192), threads, 0, stream>>>(
      c, ldc, m, n, c_scale, bias);
  SAMBAY_CUDA_CHECK_LAUNCH();
}

std::string shape_string(bool ta, bool tb, int64_t m, int64_t n, int64_t k, int64_t lda,
                         int64_t ldb, int64_t ldc) {
  return "m=" + std::to_string(m) + " n=" + std::to_string(n) + " k=" + std::to_string(k) +
         " trans_a=" + std::to_string(ta) + " trans_b=" + std::to_string(tb) +
         " lda=" + std::to_string(lda) + " ldb=" + std::to_string(ldb) +
         " ldc=" + std::to_string(ldc);
}

// Out is cuda::bf16_t or float.
template <typename Out>
void gemm_lt(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const bf16* a,
             int64_t lda, const bf16* b, int64_t ldb, float beta, Out* c, int64_t ldc,
             const float* bias, cudaStream_t stream) {
  const std::string shape = shape_string(ta, tb, m, n, k, lda, ldb, ldc);
  SAMBAY_CUDA_ARG_CHECK(m >= 0 && n >= 0 && k >= 0, "gemm_bf16_cuda: negative size, " + shape);
  SAMBAY_CUDA_ARG_CHECK(lda >= (ta ? m : k) && lda >= 1,
                        "gemm_bf16_cuda: lda too small for op(A), " + shape);
  SAMBAY_CUDA_ARG_CHECK(ldb >= (tb ? k : n) && ldb >= 1,
                        "gemm_bf16_cuda: ldb too small for op(B), " + shape);
  SAMBAY_CUDA_ARG_CHECK(ldc >= n && ldc >= 1, "gemm_bf16_cuda: ldc too small for C, " + shape);
  if (m == 0 || n == 0) return;
  if (k == 0) {  // op(A) op(B) is zero: C = beta * C + bias
    if (beta != 1.0f || bias) scale_add_bias(c, ldc, m, n, beta, bias, stream);
    return;
  }

  constexpr bool f32_out = std::is_same_v<Out, float>;
  const cudaDataType_t out_type = f32_out ? CUDA_R_32F : CUDA_R_16BF;
  DeviceState& state = device_state();
  const CublasLtDevice& res = state.resources;

  // cuBLASLt's problem: D'[n, m] = op'(B') op'(A') with its first operand our b, its second ours a.
  MatmulDesc desc;
  SAMBAY_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  desc.set(CUBLASLT_MATMUL_DESC_TRANSA, tb ? CUBLAS_OP_T : CUBLAS_OP_N);
  desc.set(CUBLASLT_MATMUL_DESC_TRANSB, ta ? CUBLAS_OP_T : CUBLAS_OP_N);
  MatrixLayout first(CUDA_R_16BF, tb ? k : n, tb ? n : k, ldb);
  MatrixLayout second(CUDA_R_16BF, ta ? m : k, ta ? k : m, lda);
  MatrixLayout out(out_type, n, m, ldc);

  auto use_bias_epilogue = [&](bool on) {
    desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, on ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT);
    if (on) {
      desc.set(CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, CUDA_R_32F);
      desc.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias);
    }
  };

  const PlanKey key{ta,        tb,       f32_out,  bias != nullptr, m,           n,
                    k,         lda,      ldb,      ldc,             alignment(a), alignment(b),
                    alignment(c), alignment(bias)};
  Plan plan{};
  bool found = false;
  {
    std::lock_guard<std::mutex> lock(state.mutex);
    auto it = state.plans.find(key);
    if (it != state.plans.end()) plan = it->second, found = true;
  }
  if (!found) {
    Preference pref;
    pref.set(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, uint64_t(res.workspace_bytes));
    pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, alignment(b));
    pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, alignment(a));
    pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, alignment(c));
    pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, alignment(c));
    auto best_algo = [&](cublasLtMatmulAlgo_t& algo) {
      cublasLtMatmulHeuristicResult_t result{};
      int count = 0;
      const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(
          res.handle, desc.desc, first.layout, second.layout, out.layout, out.layout, pref.pref,
          1, &result, &count);
      if (status != CUBLAS_STATUS_SUCCESS || count == 0) return false;
      algo = result.algo;
      return true;
    };
    plan.bias_in_epilogue = false;
    plan.use_cublas = false;
    if (bias) {
      use_bias_epilogue(true);
      plan.bias_in_epilogue = best_algo(plan.algo);
    }
    if (!plan.bias_in_epilogue) {
      use_bias_epilogue(false);
      plan.use_cublas = !best_algo(plan.algo);
    }
    std::lock_guard<std::mutex> lock(state.mutex);
    if (plan.use_cublas && !state.cublas) {
      SAMBAY_CUBLAS_V2_CHECK(cublasCreate(&state.cublas));
      SAMBAY_CUBLAS_V2_CHECK(cublasSetWorkspace(state.cublas, res.workspace, res.workspace_bytes));
    }
    state.plans.emplace(key, plan);
  }

  if (plan.use_cublas) {
    constexpr int64_t kIntMax = 2147483647;
    SAMBAY_CUDA_ARG_CHECK(m <= kIntMax && n <= kIntMax && k <= kIntMax && lda <= kIntMax &&
                              ldb <= kIntMax && ldc <= kIntMax,
                          "gemm_bf16_cuda: sizes too large for the cuBLAS fallback, " + shape);
    std::lock_guard<std::mutex> lock(state.mutex);  // the stream is a setting of the handle
    SAMBAY_CUBLAS_V2_CHECK(cublasSetStream(state.cublas, stream));
    SAMBAY_CUBLAS_V2_CHECK(cublasGemmEx(
        state.cublas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, int(n),
        int(m), int(k), &alpha, b, CUDA_R_16BF, int(ldb), a, CUDA_R_16BF, int(lda), &beta, c,
        out_type, int(ldc), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  } else {
    use_bias_epilogue(bias && plan.bias_in_epilogue);
    SAMBAY_CUBLAS_CHECK(cublasLtMatmul(res.handle, desc.desc, &alpha, b, first.layout, a,
                                       second.layout, &beta, c, out.layout, c, out.layout,
                                       &plan.algo, res.workspace, res.workspace_bytes, stream));
  }
  if (bias && !plan.bias_in_epilogue) scale_add_bias(c, ldc, m, n, 1.0f, bias, stream);
}

}  // namespace

const CublasLtDevice& cublaslt_device() { return device_state().resources; }

void gemm_bf16_cuda(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                    const bf16* a, int64_t lda, const bf16* b, int64_t ldb, float beta, bf16* c,
                    int64_t ldc, const float* bias, cudaStream_t stream) {
  gemm_lt(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, cuda::nv(c), ldc, bias, stream);
}

void gemm_bf16_cuda(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                    const bf16* a, int64_t lda, const bf16* b, int64_t ldb, float beta, float* c,
                    int64_t ldc, const float* bias, cudaStream_t stream) {
  gemm_lt(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bias, stream);
}

}  // namespace sambay
