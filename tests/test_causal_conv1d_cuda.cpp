// The CUDA causal conv1d + SiLU against the fp64 CPU reference (conv, then SiLU), run on the
// bf16/fp32 values that were uploaded, so only the kernels' own error is measured.
#include <fmt/format.h>

#include <optional>

#include "core/check.h"
#include "kernels/causal_conv1d.h"
#include "kernels/silu_scalar.h"
#include "tests/gpu_buffer.h"
#include "tests/gpu_compare.h"
#include "tests/gpu_test.h"
#include "tests/test_util.h"

namespace sambay {
namespace {

using testing::DeviceBuffer;

struct ConvCudaCase {
  int64_t B, L, C, K;
  bool docs;
};

std::string describe(const ConvCudaCase& c) {
  return fmt::format("B{}_L{}_C{}_K{}{}", c.B, c.L, c.C, c.K, c.docs ? "_docs" : "");
}
void PrintTo(const ConvCudaCase& c, std::ostream* os) { *os << describe(c); }

// Packed documents of lengths 3, 1, 2, 5, 4, 40, 1, 70 (rotated per row): some shorter than the
// window, some spanning the kernels' 16-token runs; an id that returns is a new document.
std::vector<int32_t> make_docs(int64_t B, int64_t L) {
  const int64_t lengths[] = {3, 1, 2, 5, 4, 40, 1, 70};
  std::vector<int32_t> doc(B * L);
  for (int64_t b = 0; b < B; ++b) {
    int64_t t = 0, run = b;
    while (t < L) {
      const int64_t len = lengths[run % 8];
      for (int64_t j = 0; j < len && t < L; ++j, ++t) doc[b * L + t] = int32_t(10 * b + run % 2);
      ++run;
    }
  }
  return doc;
}

struct ConvReference {
  std::vector<double> y, dx, dweight, dbias;
};

// y = silu(conv(x)); with dy the gradient of y: dpre = dy * silu'(pre), then the conv backward.
ConvReference reference(const std::vector<double>& x, const std::vector<double>& w,
                        const std::vector<double>& bias, const int32_t* doc,
                        const std::vector<double>& dy, int64_t B, int64_t L, int64_t C, int64_t K) {
  ConvReference r;
  std::vector<double> pre(x.size());
  causal_conv1d_forward(x.data(), w.data(), bias.data(), doc, pre.data(), B, L, C, K);
  r.y.resize(pre.size());
  std::vector<double> dpre(pre.size());
  for (size_t i = 0; i < pre.size(); ++i) {
    r.y[i] = scalar::silu(pre[i]);
    dpre[i] = dy[i] * scalar::silu_grad(pre[i]);
  }
  r.dx.assign(x.size(), 0.0);
  r.dweight.assign(w.size(), 0.0);
  r.dbias.assign(bias.size(), 0.0);
  causal_conv1d_backward(dpre.data(), x.data(), w.data(), doc, r.dx.data(), r.dweight.data(),
                         r.dbias.data(), B, L, C, K);
  return r;
}

constexpr double kBf16Tolerance = 1e-2;  // y and dx, stored as bf16
constexpr double kF32Tolerance = 1e-5;   // dweight, dbias: fp32 sums over B * L tokens

class CausalConv1dCudaTest : public ::testing::TestWithParam<ConvCudaCase> {};

TEST_P(CausalConv1dCudaTest, ForwardAndBackwardMatchReference) {
  SAMBAY_REQUIRE_GPU();
  const auto [B, L, C, K, docs] = GetParam();
  const int64_t n = B * L * C;
  const auto x = testing::round_to_bf16(testing::random_normal(n, 1));
  const auto w = testing::round_to_f32(testing::random_normal(C * K, 2, 0.5));
  const auto bias = testing::round_to_f32(testing::random_normal(C, 3, 0.5));
  const auto dy = testing::round_to_bf16(testing::random_normal(n, 4));
  const auto doc_ids = make_docs(B, L);
  const int32_t* doc = docs ? doc_ids.data() : nullptr;
  const ConvReference ref = reference(x, w, bias, doc, dy, B, L, C, K);

  DeviceBuffer<bf16> d_x(testing::to_bf16_vector(x)), d_dy(testing::to_bf16_vector(dy)), d_y(n);
  DeviceBuffer<float> d_w(testing::to_f32(w)), d_bias(testing::to_f32(bias));
  std::optional<DeviceBuffer<int32_t>> d_doc;
  if (docs) d_doc.emplace(doc_ids);
  const int32_t* dev_doc = docs ? d_doc->ptr : nullptr;

  d_y.poison();
  causal_conv1d_silu_forward_cuda(d_x.ptr, d_w.ptr, d_bias.ptr, dev_doc, d_y.ptr, B, L, C, K,
                                  nullptr);
  testing::expect_close("y", testing::download_f64(d_y), ref.y, kBf16Tolerance);

  // The backward adds into buffers that already hold values; the workspace starts poisoned.
  const auto dx_before =
      testing::round_to_bf16(testing::random_normal(n, 5, 0.5 * testing::rms(ref.dx) + 1e-3));
  const auto dw_before = testing::round_to_f32(testing::random_normal(C * K, 6));
  const auto db_before = testing::round_to_f32(testing::random_normal(C, 7));
  DeviceBuffer<bf16> d_dx(testing::to_bf16_vector(dx_before));
  DeviceBuffer<float> d_dw(testing::to_f32(dw_before)), d_db(testing::to_f32(db_before));
  DeviceBuffer<float> workspace(causal_conv1d_silu_backward_workspace_floats(B, L, C, K));
  workspace.poison();
  causal_conv1d_silu_backward_cuda(d_dy.ptr, d_x.ptr, d_w.ptr, d_bias.ptr, dev_doc, d_dx.ptr,
                                   d_dw.ptr, d_db.ptr, workspace.ptr, B, L, C, K, nullptr);
  using testing::download_f64;
  using testing::minus;
  testing::expect_close("dx", minus(download_f64(d_dx), dx_before), ref.dx, kBf16Tolerance);
  testing::expect_close("dweight", minus(download_f64(d_dw), dw_before), ref.dweight,
                        kF32Tolerance);
  testing::expect_close("dbias", minus(download_f64(d_db), db_before), ref.dbias, kF32Tolerance);
}

std::string case_name(const ::testing::TestParamInfo<ConvCudaCase>& info) {
  return describe(info.param);
}

// Forward threads: 8 channels by 16 tokens; backward blocks: 128 channels by 128 tokens, threads
// 4 channels by 16 tokens. C not a multiple of 8 takes the element-by-element path.
INSTANTIATE_TEST_SUITE_P(Shapes, CausalConv1dCudaTest,
                         ::testing::Values(ConvCudaCase{1, 1, 5, 4, false},        // one token
                                           ConvCudaCase{2, 1, 16, 4, true},        // one token
                                           ConvCudaCase{2, 37, 24, 4, true},       // ragged runs
                                           ConvCudaCase{2, 300, 130, 4, true},     // ragged C
                                           ConvCudaCase{1, 129, 264, 3, false},    // 3 blocks of C
                                           ConvCudaCase{3, 50, 64, 2, true},       // K = 2
                                           ConvCudaCase{1, 20, 16, 1, false},      // K = 1
                                           ConvCudaCase{2, 700, 520, 4, true},     // larger
                                           ConvCudaCase{1, 256, 4096, 4, false}),  // model width
                         case_name);

// Only dx wanted: no workspace needed, dx still right.
TEST(CausalConv1dCuda, DxOnlyNeedsNoWorkspace) {
  SAMBAY_REQUIRE_GPU();
  const int64_t B = 2, L = 90, C = 48, K = 4, n = B * L * C;
  const auto x = testing::round_to_bf16(testing::random_normal(n, 11));
  const auto w = testing::round_to_f32(testing::random_normal(C * K, 12, 0.5));
  const auto bias = testing::round_to_f32(testing::random_normal(C, 13, 0.5));
  const auto dy = testing::round_to_bf16(testing::random_normal(n, 14));
  const ConvReference ref = reference(x, w, bias, nullptr, dy, B, L, C, K);
  DeviceBuffer<bf16> d_x(testing::to_bf16_vector(x)), d_dy(testing::to_bf16_vector(dy)), d_dx(n);
  DeviceBuffer<float> d_w(testing::to_f32(w)), d_bias(testing::to_f32(bias));
  d_dx.zero();
  causal_conv1d_silu_backward_cuda(d_dy.ptr, d_x.ptr, d_w.ptr, d_bias.ptr, nullptr, d_dx.ptr,
                                   nullptr, nullptr, nullptr, B, L, C, K, nullptr);
  testing::expect_close("dx", testing::download_f64(d_dx), ref.dx, kBf16Tolerance);
}

// dweight and dbias are summed in a fixed order: two runs agree to the bit.
TEST(CausalConv1dCuda, BackwardIsDeterministic) {
  SAMBAY_REQUIRE_GPU();
  const int64_t B = 2, L = 1000, C = 256, K = 4, n = B * L * C;
  DeviceBuffer<bf16> d_x(testing::to_bf16_vector(testing::random_normal(n, 21)));
  DeviceBuffer<bf16> d_dy(testing::to_bf16_vector(testing::random_normal(n, 22)));
  DeviceBuffer<float> d_w(testing::to_f32(testing::random_normal(C * K, 23, 0.5)));
  DeviceBuffer<float> d_bias(testing::to_f32(testing::random_normal(C, 24, 0.5)));
  DeviceBuffer<float> workspace(causal_conv1d_silu_backward_workspace_floats(B, L, C, K));
  std::vector<float> first;
  for (int run = 0; run < 2; ++run) {
    DeviceBuffer<float> d_dw(C * K), d_db(C);
    d_dw.zero();
    d_db.zero();
    causal_conv1d_silu_backward_cuda(d_dy.ptr, d_x.ptr, d_w.ptr, d_bias.ptr, nullptr, nullptr,
                                     d_dw.ptr, d_db.ptr, workspace.ptr, B, L, C, K, nullptr);
    std::vector<float> got = d_dw.download();
    for (float v : d_db.download()) got.push_back(v);
    if (run == 0)
      first = got;
    else
      EXPECT_TRUE(got == first);
  }
}

TEST(CausalConv1dCuda, RejectsUnsupportedKernelSize) {
  SAMBAY_REQUIRE_GPU();
  EXPECT_THROW(causal_conv1d_silu_forward_cuda(nullptr, nullptr, nullptr, nullptr, nullptr, 1, 4, 8,
                                               5, nullptr),
               Error);
}

}  // namespace
}  // namespace sambay
