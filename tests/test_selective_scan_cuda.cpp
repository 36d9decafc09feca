// The CUDA selective scan against the fp64 CPU reference, run on the bf16/fp32 values that were
// uploaded, so only the kernels' own error is measured.
#include <fmt/format.h>

#include <cmath>
#include <optional>

#include "core/check.h"
#include "kernels/selective_scan.h"
#include "tests/gpu_buffer.h"
#include "tests/gpu_compare.h"
#include "tests/gpu_test.h"
#include "tests/test_util.h"

namespace sambay {
namespace {

using testing::DeviceBuffer;

struct ScanCudaCase {
  int64_t B, L, E, N;
  bool docs, dy_extra;
};

std::string describe(const ScanCudaCase& c) {
  return fmt::format("B{}_L{}_E{}_N{}{}{}", c.B, c.L, c.E, c.N, c.docs ? "_docs" : "",
                     c.dy_extra ? "_dyextra" : "");
}
void PrintTo(const ScanCudaCase& c, std::ostream* os) { *os << describe(c); }

// Packed documents of lengths 3, 1, 2, 5, 4, 40, 1, 70 (rotated per row): some shorter than a
// step, some spanning chunk boundaries; ids alternate, so an id that returns is a new document.
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

// Inputs as the GPU holds them (bf16 activations, fp32 parameters), in double for the reference.
// Steps delta = softplus(dt + dt_bias) around 0.01..0.1 as in a Mamba layer near its init, A_log
// = log(1..N) plus noise, D near 1.
struct ScanInputs {
  std::vector<double> x, dt, z, Bc, Cc, dt_bias, A_log, D;
};

ScanInputs make_inputs(const SelectiveScanShape& s, uint64_t seed) {
  using testing::random_normal;
  const int64_t ble = s.B * s.L * s.E, bln = s.B * s.L * s.N;
  ScanInputs in;
  in.x = testing::round_to_bf16(random_normal(ble, seed));
  in.dt = testing::round_to_bf16(random_normal(ble, seed + 1, 0.5));
  in.z = testing::round_to_bf16(random_normal(ble, seed + 2));
  in.Bc = testing::round_to_bf16(random_normal(bln, seed + 3));
  in.Cc = testing::round_to_bf16(random_normal(bln, seed + 4));
  in.dt_bias = testing::random_uniform(s.E, seed + 5, 0.01, 0.1);
  for (double& v : in.dt_bias) v = std::log(std::expm1(v));  // inverse softplus
  in.dt_bias = testing::round_to_f32(in.dt_bias);
  in.A_log = random_normal(s.E * s.N, seed + 6, 0.1);
  for (int64_t i = 0; i < s.E * s.N; ++i) in.A_log[i] += std::log(double(i % s.N + 1));
  in.A_log = testing::round_to_f32(in.A_log);
  in.D = random_normal(s.E, seed + 7, 0.3);
  for (double& v : in.D) v += 1.0;
  in.D = testing::round_to_f32(in.D);
  return in;
}

// The inputs on the device.
struct DeviceInputs {
  DeviceBuffer<bf16> x, dt, z, Bc, Cc;
  DeviceBuffer<float> dt_bias, A_log, D;
  std::optional<DeviceBuffer<int32_t>> doc;
  explicit DeviceInputs(const ScanInputs& in, const std::vector<int32_t>* docs)
      : x(testing::to_bf16_vector(in.x)),
        dt(testing::to_bf16_vector(in.dt)),
        z(testing::to_bf16_vector(in.z)),
        Bc(testing::to_bf16_vector(in.Bc)),
        Cc(testing::to_bf16_vector(in.Cc)),
        dt_bias(testing::to_f32(in.dt_bias)),
        A_log(testing::to_f32(in.A_log)),
        D(testing::to_f32(in.D)) {
    if (docs) doc.emplace(*docs);
  }
  const int32_t* doc_ptr() const { return doc ? doc->ptr : nullptr; }
};

// Gradients of every input, as in the CPU op's argument order.
struct ScanGrads {
  std::vector<double> x, dt, dt_bias, A_log, Bc, Cc, D, z;
};

ScanGrads reference_backward(const ScanInputs& in, const std::vector<double>& dout,
                             const std::vector<double>* dy_extra, const int32_t* doc,
                             const SelectiveScanShape& s) {
  ScanGrads g{std::vector<double>(in.x.size()),  std::vector<double>(in.dt.size()),
              std::vector<double>(s.E),          std::vector<double>(s.E * s.N),
              std::vector<double>(in.Bc.size()), std::vector<double>(in.Cc.size()),
              std::vector<double>(s.E),          std::vector<double>(in.z.size())};
  selective_scan_backward(dout.data(), dy_extra ? dy_extra->data() : nullptr, in.x.data(),
                          in.dt.data(), in.dt_bias.data(), in.A_log.data(), in.Bc.data(),
                          in.Cc.data(), in.D.data(), in.z.data(), doc, g.x.data(), g.dt.data(),
                          g.dt_bias.data(), g.A_log.data(), g.Bc.data(), g.Cc.data(), g.D.data(),
                          g.z.data(), s);
  return g;
}

// A starting value for a gradient buffer: random, about half the size of the gradient, rounded
// as the buffer stores it. The backward must add to it.
std::vector<double> initial_bf16(const std::vector<double>& grad, uint64_t seed) {
  return testing::round_to_bf16(
      testing::random_normal(int64_t(grad.size()), seed, 0.5 * testing::rms(grad) + 1e-3));
}
std::vector<double> initial_f32(const std::vector<double>& grad, uint64_t seed) {
  return testing::round_to_f32(
      testing::random_normal(int64_t(grad.size()), seed, 0.5 * testing::rms(grad) + 1e-3));
}

constexpr double kBf16Tolerance = 1e-2;  // outputs and activation gradients stored as bf16
constexpr double kF32Tolerance = 1e-5;   // parameter gradients, summed and stored in fp32

class SelectiveScanCudaTest : public ::testing::TestWithParam<ScanCudaCase> {};

TEST_P(SelectiveScanCudaTest, ForwardAndBackwardMatchReference) {
  SAMBAY_REQUIRE_GPU();
  const ScanCudaCase p = GetParam();
  const SelectiveScanShape s{p.B, p.L, p.E, p.N};
  const int64_t ble = s.B * s.L * s.E;
  const ScanInputs in = make_inputs(s, 100);
  const auto doc_ids = make_docs(s.B, s.L);
  const int32_t* doc = p.docs ? doc_ids.data() : nullptr;

  // Reference forward.
  std::vector<double> y_ref(ble), out_ref(ble);
  selective_scan_forward(in.x.data(), in.dt.data(), in.dt_bias.data(), in.A_log.data(),
                         in.Bc.data(), in.Cc.data(), in.D.data(), in.z.data(), doc, y_ref.data(),
                         out_ref.data(), s);

  // GPU forward into poisoned outputs and checkpoint.
  DeviceInputs dev(in, p.docs ? &doc_ids : nullptr);
  DeviceBuffer<bf16> y(ble), out(ble);
  DeviceBuffer<float> checkpoint(selective_scan_checkpoint_floats(s));
  y.poison();
  out.poison();
  checkpoint.poison();
  selective_scan_forward_cuda(dev.x.ptr, dev.dt.ptr, dev.dt_bias.ptr, dev.A_log.ptr, dev.Bc.ptr,
                              dev.Cc.ptr, dev.D.ptr, dev.z.ptr, dev.doc_ptr(), y.ptr, out.ptr,
                              checkpoint.ptr, s, nullptr);
  testing::expect_close("y", testing::download_f64(y), y_ref, kBf16Tolerance);
  testing::expect_close("out", testing::download_f64(out), out_ref, kBf16Tolerance);

  // Reference backward.
  const auto dout = testing::round_to_bf16(testing::random_normal(ble, 200));
  const auto dy_extra = testing::round_to_bf16(testing::random_normal(ble, 201, 0.5));
  const ScanGrads ref = reference_backward(in, dout, p.dy_extra ? &dy_extra : nullptr, doc, s);

  // GPU backward adding into gradient buffers that already hold values; workspace poisoned.
  const ScanGrads before{initial_bf16(ref.x, 300),      initial_bf16(ref.dt, 301),
                         initial_f32(ref.dt_bias, 302), initial_f32(ref.A_log, 303),
                         initial_bf16(ref.Bc, 304),     initial_bf16(ref.Cc, 305),
                         initial_f32(ref.D, 306),       initial_bf16(ref.z, 307)};
  DeviceBuffer<bf16> d_dout(testing::to_bf16_vector(dout)),
      d_dy_extra(testing::to_bf16_vector(dy_extra));
  DeviceBuffer<bf16> dx(testing::to_bf16_vector(before.x)), ddt(testing::to_bf16_vector(before.dt)),
      dBc(testing::to_bf16_vector(before.Bc)), dCc(testing::to_bf16_vector(before.Cc)),
      dz(testing::to_bf16_vector(before.z));
  DeviceBuffer<float> ddt_bias(testing::to_f32(before.dt_bias)),
      dA_log(testing::to_f32(before.A_log)), dD(testing::to_f32(before.D));
  DeviceBuffer<float> workspace(selective_scan_backward_workspace_floats(s));
  workspace.poison();
  selective_scan_backward_cuda(d_dout.ptr, p.dy_extra ? d_dy_extra.ptr : nullptr, dev.x.ptr,
                               dev.dt.ptr, dev.dt_bias.ptr, dev.A_log.ptr, dev.Bc.ptr, dev.Cc.ptr,
                               dev.D.ptr, dev.z.ptr, dev.doc_ptr(), checkpoint.ptr, dx.ptr, ddt.ptr,
                               ddt_bias.ptr, dA_log.ptr, dBc.ptr, dCc.ptr, dD.ptr, dz.ptr,
                               workspace.ptr, s, nullptr);

  using testing::download_f64;
  using testing::minus;
  testing::expect_close("dx", minus(download_f64(dx), before.x), ref.x, kBf16Tolerance);
  testing::expect_close("ddt", minus(download_f64(ddt), before.dt), ref.dt, kBf16Tolerance);
  testing::expect_close("dz", minus(download_f64(dz), before.z), ref.z, kBf16Tolerance);
  testing::expect_close("dBc", minus(download_f64(dBc), before.Bc), ref.Bc, kBf16Tolerance);
  testing::expect_close("dCc", minus(download_f64(dCc), before.Cc), ref.Cc, kBf16Tolerance);
  testing::expect_close("ddt_bias", minus(download_f64(ddt_bias), before.dt_bias), ref.dt_bias,
                        kF32Tolerance);
  testing::expect_close("dD", minus(download_f64(dD), before.D), ref.D, kF32Tolerance);
  // With one token nothing is carried over, so A_log gets exactly no gradient.
  if (s.L > 1)
    testing::expect_close("dA_log", minus(download_f64(dA_log), before.A_log), ref.A_log,
                          kF32Tolerance);
  else
    EXPECT_EQ(download_f64(dA_log), before.A_log);
}

std::string case_name(const ::testing::TestParamInfo<ScanCudaCase>& info) {
  return describe(info.param);
}

// Chunks are 32 tokens, blocks 32 channels, clusters 8 blocks (256 channels); E not a multiple
// of 8 takes the element-by-element load path.
INSTANTIATE_TEST_SUITE_P(
    Shapes, SelectiveScanCudaTest,
    ::testing::Values(ScanCudaCase{1, 1, 5, 16, false, false},     // one token
                      ScanCudaCase{2, 1, 40, 16, true, true},      // one token, docs
                      ScanCudaCase{2, 20, 37, 16, false, true},    // L < chunk, ragged E
                      ScanCudaCase{1, 64, 40, 16, false, false},   // L = 2 chunks, E % 32 != 0
                      ScanCudaCase{2, 100, 64, 16, true, true},    // ragged last chunk
                      ScanCudaCase{2, 77, 33, 4, true, false},     // N = 4
                      ScanCudaCase{1, 45, 72, 8, true, true},      // N = 8
                      ScanCudaCase{1, 45, 72, 8, false, false},    // N = 8
                      ScanCudaCase{3, 131, 300, 16, true, true},   // 2 clusters, padded
                      ScanCudaCase{1, 200, 520, 16, false, true},  // 3 clusters
                      ScanCudaCase{2, 96, 264, 4, true, true}),    // N = 4, 2 clusters
    case_name);

// Null gradient pointers skip those gradients and leave the rest right; a null y is not written.
TEST(SelectiveScanCuda, NullPointersSkip) {
  SAMBAY_REQUIRE_GPU();
  const SelectiveScanShape s{2, 70, 48, 16};
  const int64_t ble = s.B * s.L * s.E;
  const ScanInputs in = make_inputs(s, 400);
  std::vector<double> y_ref(ble), out_ref(ble);
  selective_scan_forward(in.x.data(), in.dt.data(), in.dt_bias.data(), in.A_log.data(),
                         in.Bc.data(), in.Cc.data(), in.D.data(), in.z.data(), nullptr,
                         y_ref.data(), out_ref.data(), s);
  DeviceInputs dev(in, nullptr);
  DeviceBuffer<bf16> out(ble);
  DeviceBuffer<float> checkpoint(selective_scan_checkpoint_floats(s));
  out.poison();
  selective_scan_forward_cuda(dev.x.ptr, dev.dt.ptr, dev.dt_bias.ptr, dev.A_log.ptr, dev.Bc.ptr,
                              dev.Cc.ptr, dev.D.ptr, dev.z.ptr, nullptr, nullptr, out.ptr,
                              checkpoint.ptr, s, nullptr);
  testing::expect_close("out", testing::download_f64(out), out_ref, kBf16Tolerance);

  const auto dout = testing::round_to_bf16(testing::random_normal(ble, 401));
  const ScanGrads ref = reference_backward(in, dout, nullptr, nullptr, s);
  DeviceBuffer<bf16> d_dout(testing::to_bf16_vector(dout)), dCc(s.B * s.L * s.N);
  DeviceBuffer<float> dD(s.E), workspace(selective_scan_backward_workspace_floats(s));
  dCc.zero();
  dD.zero();
  workspace.poison();
  selective_scan_backward_cuda(d_dout.ptr, nullptr, dev.x.ptr, dev.dt.ptr, dev.dt_bias.ptr,
                               dev.A_log.ptr, dev.Bc.ptr, dev.Cc.ptr, dev.D.ptr, dev.z.ptr, nullptr,
                               checkpoint.ptr, nullptr, nullptr, nullptr, nullptr, nullptr, dCc.ptr,
                               dD.ptr, nullptr, workspace.ptr, s, nullptr);
  testing::expect_close("dCc", testing::download_f64(dCc), ref.Cc, kBf16Tolerance);
  testing::expect_close("dD", testing::download_f64(dD), ref.D, kF32Tolerance);
}

// Every sum has a fixed order, so two runs agree to the bit.
TEST(SelectiveScanCuda, BackwardIsDeterministic) {
  SAMBAY_REQUIRE_GPU();
  const SelectiveScanShape s{2, 150, 600, 16};
  const int64_t ble = s.B * s.L * s.E, bln = s.B * s.L * s.N;
  const ScanInputs in = make_inputs(s, 500);
  const auto docs = make_docs(s.B, s.L);
  DeviceInputs dev(in, &docs);
  DeviceBuffer<bf16> out(ble);
  DeviceBuffer<float> checkpoint(selective_scan_checkpoint_floats(s));
  selective_scan_forward_cuda(dev.x.ptr, dev.dt.ptr, dev.dt_bias.ptr, dev.A_log.ptr, dev.Bc.ptr,
                              dev.Cc.ptr, dev.D.ptr, dev.z.ptr, dev.doc_ptr(), nullptr, out.ptr,
                              checkpoint.ptr, s, nullptr);
  DeviceBuffer<bf16> dout(testing::to_bf16_vector(testing::random_normal(ble, 501)));
  DeviceBuffer<float> workspace(selective_scan_backward_workspace_floats(s));
  std::vector<uint16_t> first_bits;
  std::vector<float> first_params;
  for (int run = 0; run < 2; ++run) {
    DeviceBuffer<bf16> dx(ble), dBc(bln), dCc(bln);
    DeviceBuffer<float> dA_log(s.E * s.N), dD(s.E), ddt_bias(s.E);
    for (auto* b : {&dx, &dBc, &dCc}) b->zero();
    for (auto* b : {&dA_log, &dD, &ddt_bias}) b->zero();
    selective_scan_backward_cuda(
        dout.ptr, nullptr, dev.x.ptr, dev.dt.ptr, dev.dt_bias.ptr, dev.A_log.ptr, dev.Bc.ptr,
        dev.Cc.ptr, dev.D.ptr, dev.z.ptr, dev.doc_ptr(), checkpoint.ptr, dx.ptr, nullptr,
        ddt_bias.ptr, dA_log.ptr, dBc.ptr, dCc.ptr, dD.ptr, nullptr, workspace.ptr, s, nullptr);
    std::vector<uint16_t> bits;
    for (auto* b : {&dx, &dBc, &dCc})
      for (bf16 v : b->download()) bits.push_back(v.bits);
    std::vector<float> params;
    for (auto* b : {&dA_log, &dD, &ddt_bias})
      for (float v : b->download()) params.push_back(v);
    if (run == 0) {
      first_bits = bits;
      first_params = params;
    } else {
      EXPECT_TRUE(bits == first_bits) << "activation gradients differ between runs";
      EXPECT_TRUE(params == first_params) << "parameter gradients differ between runs";
    }
  }
}

TEST(SelectiveScanCuda, RejectsUnsupportedStateSize) {
  SAMBAY_REQUIRE_GPU();
  const SelectiveScanShape s{1, 4, 8, 12};
  EXPECT_THROW(
      selective_scan_forward_cuda(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                  nullptr, nullptr, nullptr, nullptr, nullptr, s, nullptr),
      Error);
}

}  // namespace
}  // namespace sambay
