// The CUDA selective scan against the fp64 CPU reference, run on the bf16/fp32 values that were
// uploaded, so only the kernels' own error is measured.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <string>
#include <tuple>

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

// Whether a backward is given the forward's y (as the model runs it) or rebuilds y in its walk
// (y null): two code paths, and every test of the backward runs both.
constexpr bool kSavedYModes[] = {false, true};

std::string describe_saved_y(bool saved_y) {
  return saved_y ? "backward given the forward's y" : "backward rebuilding y";
}

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
  for (bool saved_y : kSavedYModes) {
    SCOPED_TRACE(describe_saved_y(saved_y));
    DeviceBuffer<bf16> dx(testing::to_bf16_vector(before.x)),
        ddt(testing::to_bf16_vector(before.dt)), dBc(testing::to_bf16_vector(before.Bc)),
        dCc(testing::to_bf16_vector(before.Cc)), dz(testing::to_bf16_vector(before.z));
    DeviceBuffer<float> ddt_bias(testing::to_f32(before.dt_bias)),
        dA_log(testing::to_f32(before.A_log)), dD(testing::to_f32(before.D));
    DeviceBuffer<float> workspace(selective_scan_backward_workspace_floats(s));
    workspace.poison();
    selective_scan_backward_cuda(d_dout.ptr, p.dy_extra ? d_dy_extra.ptr : nullptr, dev.x.ptr,
                                 dev.dt.ptr, dev.dt_bias.ptr, dev.A_log.ptr, dev.Bc.ptr,
                                 dev.Cc.ptr, dev.D.ptr, dev.z.ptr, saved_y ? y.ptr : nullptr,
                                 dev.doc_ptr(), checkpoint.ptr, dx.ptr, ddt.ptr, ddt_bias.ptr,
                                 dA_log.ptr, dBc.ptr, dCc.ptr, dD.ptr, dz.ptr, workspace.ptr, s,
                                 nullptr);

    using testing::download_f64;
    using testing::minus;
    testing::expect_close("dx", minus(download_f64(dx), before.x), ref.x, kBf16Tolerance);
    testing::expect_close("ddt", minus(download_f64(ddt), before.dt), ref.dt, kBf16Tolerance);
    testing::expect_close("dz", minus(download_f64(dz), before.z), ref.z, kBf16Tolerance);
    testing::expect_close("dBc", minus(download_f64(dBc), before.Bc), ref.Bc, kBf16Tolerance);
    testing::expect_close("dCc", minus(download_f64(dCc), before.Cc), ref.Cc, kBf16Tolerance);
    testing::expect_close("ddt_bias", minus(download_f64(ddt_bias), before.dt_bias),
                          ref.dt_bias, kF32Tolerance);
    testing::expect_close("dD", minus(download_f64(dD), before.D), ref.D, kF32Tolerance);
    // With one token nothing is carried over, so A_log gets exactly no gradient.
    if (s.L > 1)
      testing::expect_close("dA_log", minus(download_f64(dA_log), before.A_log), ref.A_log,
                            kF32Tolerance);
    else
      EXPECT_EQ(download_f64(dA_log), before.A_log);
  }
}

std::string case_name(const ::testing::TestParamInfo<ScanCudaCase>& info) {
  return describe(info.param);
}

// Chunks are 64 tokens; the backward takes channels in groups of 32 and parts of 128; F2 and B2
// load 8 chunks at a time; E not a multiple of 8 takes the element-by-element paths.
INSTANTIATE_TEST_SUITE_P(
    Shapes, SelectiveScanCudaTest,
    ::testing::Values(ScanCudaCase{1, 1, 5, 16, false, false},      // one token
                      ScanCudaCase{2, 1, 40, 16, true, true},       // one token, docs
                      ScanCudaCase{2, 20, 37, 16, false, true},     // L < chunk, ragged E
                      ScanCudaCase{1, 64, 40, 16, false, false},    // L = one chunk
                      ScanCudaCase{1, 128, 33, 16, true, false},    // L = two chunks
                      ScanCudaCase{2, 200, 64, 16, true, true},     // last chunk of 8 tokens
                      ScanCudaCase{2, 77, 33, 4, true, false},      // N = 4
                      ScanCudaCase{1, 145, 72, 8, true, true},      // N = 8
                      ScanCudaCase{1, 145, 72, 8, false, false},    // N = 8
                      ScanCudaCase{3, 131, 300, 16, true, true},    // 3 parts, the last ragged
                      ScanCudaCase{1, 300, 520, 16, false, true},   // 5 parts
                      ScanCudaCase{2, 96, 264, 4, true, true},      // N = 4, 3 parts
                      ScanCudaCase{1, 1100, 40, 16, true, false},   // 18 chunks: 3 fold batches
                      ScanCudaCase{2, 700, 24, 8, false, true}),    // 11 chunks, N = 8
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

  DeviceBuffer<bf16> y(ble);  // for the backward given the forward's y
  selective_scan_forward_cuda(dev.x.ptr, dev.dt.ptr, dev.dt_bias.ptr, dev.A_log.ptr, dev.Bc.ptr,
                              dev.Cc.ptr, dev.D.ptr, dev.z.ptr, nullptr, y.ptr, nullptr,
                              checkpoint.ptr, s, nullptr);

  const auto dout = testing::round_to_bf16(testing::random_normal(ble, 401));
  const ScanGrads ref = reference_backward(in, dout, nullptr, nullptr, s);
  DeviceBuffer<bf16> d_dout(testing::to_bf16_vector(dout));
  for (bool saved_y : kSavedYModes) {
    SCOPED_TRACE(describe_saved_y(saved_y));
    DeviceBuffer<bf16> dCc(s.B * s.L * s.N);
    DeviceBuffer<float> dD(s.E), workspace(selective_scan_backward_workspace_floats(s));
    dCc.zero();
    dD.zero();
    workspace.poison();
    selective_scan_backward_cuda(d_dout.ptr, nullptr, dev.x.ptr, dev.dt.ptr, dev.dt_bias.ptr,
                                 dev.A_log.ptr, dev.Bc.ptr, dev.Cc.ptr, dev.D.ptr, dev.z.ptr,
                                 saved_y ? y.ptr : nullptr, nullptr, checkpoint.ptr, nullptr,
                                 nullptr, nullptr, nullptr, nullptr, dCc.ptr, dD.ptr, nullptr,
                                 workspace.ptr, s, nullptr);
    testing::expect_close("dCc", testing::download_f64(dCc), ref.Cc, kBf16Tolerance);
    testing::expect_close("dD", testing::download_f64(dD), ref.D, kF32Tolerance);
  }
}

// ---- carried state (ScanCarry), chained calls, determinism ----

// Optional carried inputs, [B, E, N], as fp32 values in double (null: absent).
struct CarryIn {
  const std::vector<double>* state_in = nullptr;
  const std::vector<double>* dstate_out = nullptr;
};

// Every output of one forward and one backward (gradient buffers starting at zero): the GPU's
// downloaded, or the fp64 reference's.
struct ScanRun {
  std::vector<double> y, out, state_out, decay_out, dstate_in;
  ScanGrads grads;
  std::vector<double> checkpoint;  // GPU only
};

ScanGrads zero_grads(const SelectiveScanShape& s) {
  const int64_t ble = s.B * s.L * s.E, bln = s.B * s.L * s.N;
  return {std::vector<double>(ble), std::vector<double>(ble),     std::vector<double>(s.E),
          std::vector<double>(s.E * s.N), std::vector<double>(bln), std::vector<double>(bln),
          std::vector<double>(s.E),       std::vector<double>(ble)};
}

ScanRun run_reference(const ScanInputs& in, const std::vector<int32_t>* doc,
                      const std::vector<double>& dout, const std::vector<double>* dy_extra,
                      const SelectiveScanShape& s, const CarryIn& carry) {
  const int64_t ble = s.B * s.L * s.E, ben = s.B * s.E * s.N;
  ScanRun r{std::vector<double>(ble), std::vector<double>(ble), std::vector<double>(ben),
            std::vector<double>(ben), std::vector<double>(ben), zero_grads(s), {}};
  const int32_t* d = doc ? doc->data() : nullptr;
  ScanCarry<double> fwd;
  fwd.state_in = carry.state_in ? carry.state_in->data() : nullptr;
  fwd.state_out = r.state_out.data(), fwd.decay_out = r.decay_out.data();
  selective_scan_forward(in.x.data(), in.dt.data(), in.dt_bias.data(), in.A_log.data(),
                         in.Bc.data(), in.Cc.data(), in.D.data(), in.z.data(), d, r.y.data(),
                         r.out.data(), s, fwd);
  ScanCarry<double> bwd;
  bwd.state_in = fwd.state_in;
  bwd.dstate_out = carry.dstate_out ? carry.dstate_out->data() : nullptr;
  bwd.dstate_in = r.dstate_in.data();
  ScanGrads& g = r.grads;
  selective_scan_backward(dout.data(), dy_extra ? dy_extra->data() : nullptr, in.x.data(),
                          in.dt.data(), in.dt_bias.data(), in.A_log.data(), in.Bc.data(),
                          in.Cc.data(), in.D.data(), in.z.data(), d, g.x.data(), g.dt.data(),
                          g.dt_bias.data(), g.A_log.data(), g.Bc.data(), g.Cc.data(), g.D.data(),
                          g.z.data(), s, bwd);
  return r;
}

ScanRun run_gpu(const ScanInputs& in, const std::vector<int32_t>* doc,
                const std::vector<double>& dout, const std::vector<double>* dy_extra,
                const SelectiveScanShape& s, const CarryIn& carry, bool saved_y = true) {
  using testing::download_f64;
  const int64_t ble = s.B * s.L * s.E, bln = s.B * s.L * s.N, ben = s.B * s.E * s.N;
  DeviceInputs dev(in, doc);
  DeviceBuffer<bf16> y(ble), out(ble);
  DeviceBuffer<float> checkpoint(selective_scan_checkpoint_floats(s)), state_out(ben),
      decay_out(ben);
  std::optional<DeviceBuffer<float>> state_in, dstate_out;
  if (carry.state_in) state_in.emplace(testing::to_f32(*carry.state_in));
  if (carry.dstate_out) dstate_out.emplace(testing::to_f32(*carry.dstate_out));
  for (auto* b : {&y, &out}) b->poison();
  for (auto* b : {&checkpoint, &state_out, &decay_out}) b->poison();
  ScanCarry<float> fwd;
  fwd.state_in = state_in ? state_in->ptr : nullptr;
  fwd.state_out = state_out.ptr, fwd.decay_out = decay_out.ptr;
  selective_scan_forward_cuda(dev.x.ptr, dev.dt.ptr, dev.dt_bias.ptr, dev.A_log.ptr, dev.Bc.ptr,
                              dev.Cc.ptr, dev.D.ptr, dev.z.ptr, dev.doc_ptr(), y.ptr, out.ptr,
                              checkpoint.ptr, s, nullptr, fwd);
  ScanRun r;
  r.y = download_f64(y), r.out = download_f64(out), r.checkpoint = download_f64(checkpoint);
  r.state_out = download_f64(state_out), r.decay_out = download_f64(decay_out);

  DeviceBuffer<bf16> d_dout(testing::to_bf16_vector(dout));
  std::optional<DeviceBuffer<bf16>> d_dy_extra;
  if (dy_extra) d_dy_extra.emplace(testing::to_bf16_vector(*dy_extra));
  DeviceBuffer<bf16> dx(ble), ddt(ble), dz(ble), dBc(bln), dCc(bln);
  DeviceBuffer<float> ddt_bias(s.E), dA_log(s.E * s.N), dD(s.E), dstate_in(ben);
  DeviceBuffer<float> workspace(selective_scan_backward_workspace_floats(s));
  for (auto* b : {&dx, &ddt, &dz, &dBc, &dCc}) b->zero();
  for (auto* b : {&ddt_bias, &dA_log, &dD, &dstate_in}) b->zero();
  workspace.poison();
  ScanCarry<float> bwd = fwd;
  bwd.dstate_out = dstate_out ? dstate_out->ptr : nullptr;
  bwd.dstate_in = dstate_in.ptr;
  selective_scan_backward_cuda(d_dout.ptr, d_dy_extra ? d_dy_extra->ptr : nullptr, dev.x.ptr,
                               dev.dt.ptr, dev.dt_bias.ptr, dev.A_log.ptr, dev.Bc.ptr, dev.Cc.ptr,
                               dev.D.ptr, dev.z.ptr, saved_y ? y.ptr : nullptr,
                               dev.doc_ptr(), checkpoint.ptr, dx.ptr, ddt.ptr, ddt_bias.ptr,
                               dA_log.ptr, dBc.ptr, dCc.ptr, dD.ptr, dz.ptr, workspace.ptr, s,
                               nullptr, bwd);
  r.dstate_in = download_f64(dstate_in);
  r.grads = {download_f64(dx),  download_f64(ddt), download_f64(ddt_bias), download_f64(dA_log),
             download_f64(dBc), download_f64(dCc), download_f64(dD),       download_f64(dz)};
  return r;
}

// Everything a run computes, GPU against reference, with the tolerances of the main test (the
// carried states and their gradients are fp32 like the parameter gradients).
void expect_run_close(const ScanRun& got, const ScanRun& ref) {
  using testing::expect_close;
  expect_close("y", got.y, ref.y, kBf16Tolerance);
  expect_close("out", got.out, ref.out, kBf16Tolerance);
  expect_close("state_out", got.state_out, ref.state_out, kF32Tolerance);
  expect_close("decay_out", got.decay_out, ref.decay_out, kF32Tolerance);
  expect_close("dstate_in", got.dstate_in, ref.dstate_in, kF32Tolerance);
  const ScanGrads &g = got.grads, &r = ref.grads;
  expect_close("dx", g.x, r.x, kBf16Tolerance);
  expect_close("ddt", g.dt, r.dt, kBf16Tolerance);
  expect_close("dz", g.z, r.z, kBf16Tolerance);
  expect_close("dBc", g.Bc, r.Bc, kBf16Tolerance);
  expect_close("dCc", g.Cc, r.Cc, kBf16Tolerance);
  expect_close("ddt_bias", g.dt_bias, r.dt_bias, kF32Tolerance);
  expect_close("dD", g.D, r.D, kF32Tolerance);
  expect_close("dA_log", g.A_log, r.A_log, kF32Tolerance);
}

// A carried state and a gradient arriving at the final state, as fp32 holds them.
std::vector<double> random_state(const SelectiveScanShape& s, uint64_t seed) {
  return testing::round_to_f32(testing::random_normal(s.B * s.E * s.N, seed));
}

class SelectiveScanCudaCarryTest : public ::testing::TestWithParam<ScanCudaCase> {};

// state_in, state_out, decay_out, dstate_out and dstate_in as the CPU contract defines them,
// and every output and gradient with a state carried in and a gradient carried out.
TEST_P(SelectiveScanCudaCarryTest, CarriedStatesMatchReference) {
  SAMBAY_REQUIRE_GPU();
  const ScanCudaCase p = GetParam();
  const SelectiveScanShape s{p.B, p.L, p.E, p.N};
  const ScanInputs in = make_inputs(s, 600);
  const auto docs = make_docs(s.B, s.L);
  const auto* doc = p.docs ? &docs : nullptr;
  const auto dout = testing::round_to_bf16(testing::random_normal(s.B * s.L * s.E, 601));
  const auto dy_extra = testing::round_to_bf16(testing::random_normal(s.B * s.L * s.E, 602, 0.5));
  const auto state_in = random_state(s, 603), dstate_out = random_state(s, 604);
  const CarryIn carry{&state_in, &dstate_out};
  const auto* dy = p.dy_extra ? &dy_extra : nullptr;
  const ScanRun ref = run_reference(in, doc, dout, dy, s, carry);
  for (bool saved_y : kSavedYModes) {
    SCOPED_TRACE(describe_saved_y(saved_y));
    expect_run_close(run_gpu(in, doc, dout, dy, s, carry, saved_y), ref);
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, SelectiveScanCudaCarryTest,
                         ::testing::Values(ScanCudaCase{1, 3, 8, 16, false, true},
                                           ScanCudaCase{2, 150, 40, 16, true, true},
                                           ScanCudaCase{1, 64, 33, 8, false, false},
                                           ScanCudaCase{2, 77, 20, 4, true, true},
                                           ScanCudaCase{1, 600, 150, 16, true, false}),
                         case_name);

// Rows [t0, t1) of a [B, L, W] tensor, and their way back.
template <typename T>
std::vector<T> take_rows(const std::vector<T>& v, int64_t B, int64_t L, int64_t W, int64_t t0,
                         int64_t t1) {
  std::vector<T> part;
  for (int64_t b = 0; b < B; ++b)
    part.insert(part.end(), v.begin() + (b * L + t0) * W, v.begin() + (b * L + t1) * W);
  return part;
}
void put_rows(const std::vector<double>& part, std::vector<double>& whole, int64_t B, int64_t L,
              int64_t W, int64_t t0, int64_t t1) {
  for (int64_t b = 0; b < B; ++b)
    std::copy_n(part.begin() + b * (t1 - t0) * W, (t1 - t0) * W, whole.begin() + (b * L + t0) * W);
}
ScanInputs take_inputs(const ScanInputs& in, const SelectiveScanShape& s, int64_t t0, int64_t t1) {
  ScanInputs part = in;
  for (auto* v : {&part.x, &part.dt, &part.z}) *v = take_rows(*v, s.B, s.L, s.E, t0, t1);
  for (auto* v : {&part.Bc, &part.Cc}) *v = take_rows(*v, s.B, s.L, s.N, t0, t1);
  return part;
}

// Document starts on, just before and just after the chunk edges 64 and 128, and at the split
// points 64 and 100 of the chained test: in row 0 (and every even row) at all of those, in row 1
// at none of the edges (one token after or before instead).
std::vector<int32_t> edge_docs(int64_t B, int64_t L) {
  const std::vector<int64_t> starts[2] = {{1, 63, 64, 100, 101, 127, 128, 150}, {5, 65, 99, 129}};
  std::vector<int32_t> doc(B * L);
  for (int64_t b = 0; b < B; ++b) {
    int32_t id = int32_t(100 * b);
    for (int64_t t = 0; t < L; ++t) {
      for (int64_t start : starts[b % 2]) id += start == t;
      doc[b * L + t] = id;
    }
  }
  return doc;
}

// Zeroes the [E, N] rows of a carried tensor whose row starts a document at t (the caller's part
// of the contract at a split inside a document stream).
void drop_at_document_start(std::vector<double>& carried, const std::vector<int32_t>& doc,
                            const SelectiveScanShape& s, int64_t t) {
  for (int64_t b = 0; b < s.B; ++b)
    if (doc[b * s.L + t] != doc[b * s.L + t - 1])
      std::fill_n(carried.begin() + b * s.E * s.N, s.E * s.N, 0.0);
}

// The sequence split in two GPU calls joined through state_out -> state_in and dstate_in ->
// dstate_out gives the whole sequence's outputs and gradients; the whole GPU call itself matches
// the reference with document starts at chunk edges.
TEST(SelectiveScanCuda, ChainedCallsMatchWholeSequence) {
  SAMBAY_REQUIRE_GPU();
  for (int64_t N : {4, 16}) {
    const SelectiveScanShape s{2, 160, 40, N};
    const int64_t B = s.B, L = s.L, E = s.E;
    const ScanInputs in = make_inputs(s, 700);
    const auto doc = edge_docs(B, L);
    const auto dout = testing::round_to_bf16(testing::random_normal(B * L * E, 701));
    const auto dy_extra = testing::round_to_bf16(testing::random_normal(B * L * E, 702, 0.5));
    const ScanRun ref = run_reference(in, &doc, dout, &dy_extra, s, {});
    for (bool saved_y : kSavedYModes) {
      SCOPED_TRACE("whole sequence, N = " + std::to_string(N) + ", " + describe_saved_y(saved_y));
      expect_run_close(run_gpu(in, &doc, dout, &dy_extra, s, {}, saved_y), ref);
    }
    for (int64_t t1 : {64, 100}) {
      SCOPED_TRACE("split at " + std::to_string(t1) + ", N = " + std::to_string(N));
      const SelectiveScanShape first{B, t1, E, N}, second{B, L - t1, E, N};
      const ScanInputs in1 = take_inputs(in, s, 0, t1), in2 = take_inputs(in, s, t1, L);
      const auto doc1 = take_rows(doc, B, L, 1, 0, t1), doc2 = take_rows(doc, B, L, 1, t1, L);
      const auto dout1 = take_rows(dout, B, L, E, 0, t1), dout2 = take_rows(dout, B, L, E, t1, L);
      const auto dy1 = take_rows(dy_extra, B, L, E, 0, t1);
      const auto dy2 = take_rows(dy_extra, B, L, E, t1, L);

      std::vector<double> state = run_gpu(in1, &doc1, dout1, &dy1, first, {}).state_out;
      drop_at_document_start(state, doc, s, t1);
      const ScanRun run2 = run_gpu(in2, &doc2, dout2, &dy2, second, {&state, nullptr});
      std::vector<double> dstate = run2.dstate_in;
      drop_at_document_start(dstate, doc, s, t1);
      const ScanRun run1 = run_gpu(in1, &doc1, dout1, &dy1, first, {nullptr, &dstate});

      ScanRun joined = ref;  // every field overwritten below
      for (auto [whole, a, b, W] :
           {std::tuple{&joined.y, &run1.y, &run2.y, E}, {&joined.out, &run1.out, &run2.out, E},
            {&joined.grads.x, &run1.grads.x, &run2.grads.x, E},
            {&joined.grads.dt, &run1.grads.dt, &run2.grads.dt, E},
            {&joined.grads.z, &run1.grads.z, &run2.grads.z, E},
            {&joined.grads.Bc, &run1.grads.Bc, &run2.grads.Bc, N},
            {&joined.grads.Cc, &run1.grads.Cc, &run2.grads.Cc, N}}) {
        put_rows(*a, *whole, B, L, W, 0, t1);
        put_rows(*b, *whole, B, L, W, t1, L);
      }
      joined.grads.dt_bias = testing::plus(run1.grads.dt_bias, run2.grads.dt_bias);
      joined.grads.D = testing::plus(run1.grads.D, run2.grads.D);
      joined.grads.A_log = testing::plus(run1.grads.A_log, run2.grads.A_log);
      joined.state_out = run2.state_out;
      for (size_t i = 0; i < joined.decay_out.size(); ++i)
        joined.decay_out[i] = run1.decay_out[i] * run2.decay_out[i];
      joined.dstate_in = run1.dstate_in;
      expect_run_close(joined, ref);
    }
  }
}

// With every gradient pointer null the backward computes dstate_in alone, to the same bits as
// the full backward; with y and out null the forward computes the checkpoint and the carried
// state alone, to the same bits as the full forward.
TEST(SelectiveScanCuda, CarriesAloneMatchFullCalls) {
  SAMBAY_REQUIRE_GPU();
  const SelectiveScanShape s{2, 150, 40, 16};
  const int64_t ble = s.B * s.L * s.E, ben = s.B * s.E * s.N;
  const ScanInputs in = make_inputs(s, 800);
  const auto docs = make_docs(s.B, s.L);
  const auto state_in = random_state(s, 801), dstate_out = random_state(s, 802);
  const auto dout = testing::round_to_bf16(testing::random_normal(ble, 803));
  const ScanRun full = run_gpu(in, &docs, dout, nullptr, s, {&state_in, &dstate_out});

  DeviceInputs dev(in, &docs);
  DeviceBuffer<float> d_state_in(testing::to_f32(state_in)), state_out(ben), decay_out(ben);
  DeviceBuffer<float> checkpoint(selective_scan_checkpoint_floats(s));
  ScanCarry<float> fwd;
  fwd.state_in = d_state_in.ptr, fwd.state_out = state_out.ptr, fwd.decay_out = decay_out.ptr;
  selective_scan_forward_cuda(dev.x.ptr, dev.dt.ptr, dev.dt_bias.ptr, dev.A_log.ptr, dev.Bc.ptr,
                              dev.Cc.ptr, dev.D.ptr, dev.z.ptr, dev.doc_ptr(), nullptr, nullptr,
                              checkpoint.ptr, s, nullptr, fwd);
  EXPECT_TRUE(testing::download_f64(checkpoint) == full.checkpoint) << "checkpoint";
  EXPECT_TRUE(testing::download_f64(state_out) == full.state_out) << "state_out";
  EXPECT_TRUE(testing::download_f64(decay_out) == full.decay_out) << "decay_out";

  DeviceBuffer<bf16> d_dout(testing::to_bf16_vector(dout));
  DeviceBuffer<float> d_dstate_out(testing::to_f32(dstate_out)), dstate_in(ben);
  DeviceBuffer<float> workspace(selective_scan_backward_workspace_floats(s));
  dstate_in.zero();
  ScanCarry<float> bwd;
  bwd.dstate_out = d_dstate_out.ptr, bwd.dstate_in = dstate_in.ptr;
  selective_scan_backward_cuda(d_dout.ptr, nullptr, dev.x.ptr, dev.dt.ptr, dev.dt_bias.ptr,
                               dev.A_log.ptr, dev.Bc.ptr, dev.Cc.ptr, dev.D.ptr, dev.z.ptr,
                               nullptr, dev.doc_ptr(), checkpoint.ptr, nullptr, nullptr, nullptr,
                               nullptr, nullptr, nullptr, nullptr, nullptr, workspace.ptr, s,
                               nullptr, bwd);
  EXPECT_TRUE(testing::download_f64(dstate_in) == full.dstate_in) << "dstate_in";
}

// The checkpoint holds the state entering every chunk (state_in for the first) and then every
// chunk's summed steps: the entering states against the reference's state after the prefix.
TEST(SelectiveScanCuda, CheckpointHoldsTheStatesEnteringEveryChunk) {
  SAMBAY_REQUIRE_GPU();
  const SelectiveScanShape s{2, 150, 40, 16};
  const int64_t B = s.B, E = s.E, N = s.N, chunks = selective_scan_chunks(s);
  const ScanInputs in = make_inputs(s, 900);
  const auto docs = make_docs(B, s.L);
  const auto state_in = random_state(s, 901);
  const auto dout = testing::round_to_bf16(testing::random_normal(B * s.L * E, 902));
  const ScanRun gpu = run_gpu(in, &docs, dout, nullptr, s, {&state_in, nullptr});
  ASSERT_EQ(int64_t(gpu.checkpoint.size()), B * chunks * E * (N + 1));
  for (int64_t c = 0; c < chunks; ++c) {
    std::vector<double> entering(B * E * N);
    for (int64_t b = 0; b < B; ++b)
      std::copy_n(gpu.checkpoint.begin() + (b * chunks + c) * E * N, E * N,
                  entering.begin() + b * E * N);
    if (c == 0) {
      EXPECT_EQ(entering, state_in) << "chunk 0 enters with state_in";
      continue;
    }
    const int64_t t1 = c * kSelectiveScanChunk;
    const SelectiveScanShape prefix{B, t1, E, N};
    const auto doc = take_rows(docs, B, s.L, 1, 0, t1);
    const ScanRun ref = run_reference(take_inputs(in, s, 0, t1), &doc,
                                      take_rows(dout, B, s.L, E, 0, t1), nullptr, prefix,
                                      {&state_in, nullptr});
    SCOPED_TRACE("chunk " + std::to_string(c));
    testing::expect_close("entering state", entering, ref.state_out, kF32Tolerance);
  }
}

// Every sum has a fixed order, so two runs agree to the bit.
TEST(SelectiveScanCuda, ForwardAndBackwardAreDeterministic) {
  SAMBAY_REQUIRE_GPU();
  const SelectiveScanShape s{2, 300, 600, 16};
  const ScanInputs in = make_inputs(s, 500);
  const auto docs = make_docs(s.B, s.L);
  const auto dout = testing::round_to_bf16(testing::random_normal(s.B * s.L * s.E, 501));
  const auto state_in = random_state(s, 502), dstate_out = random_state(s, 503);
  const CarryIn carry{&state_in, &dstate_out};
  auto same = [](const std::vector<double>& a, const std::vector<double>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0;
  };
  for (bool saved_y : kSavedYModes) {
    SCOPED_TRACE(describe_saved_y(saved_y));
    const ScanRun first = run_gpu(in, &docs, dout, nullptr, s, carry, saved_y);
    const ScanRun second = run_gpu(in, &docs, dout, nullptr, s, carry, saved_y);
    const std::pair<const char*,
                    std::pair<const std::vector<double>*, const std::vector<double>*>>
        outputs[] = {{"y", {&first.y, &second.y}},
                     {"out", {&first.out, &second.out}},
                     {"checkpoint", {&first.checkpoint, &second.checkpoint}},
                     {"state_out", {&first.state_out, &second.state_out}},
                     {"decay_out", {&first.decay_out, &second.decay_out}},
                     {"dstate_in", {&first.dstate_in, &second.dstate_in}},
                     {"dx", {&first.grads.x, &second.grads.x}},
                     {"ddt", {&first.grads.dt, &second.grads.dt}},
                     {"dz", {&first.grads.z, &second.grads.z}},
                     {"dBc", {&first.grads.Bc, &second.grads.Bc}},
                     {"dCc", {&first.grads.Cc, &second.grads.Cc}},
                     {"ddt_bias", {&first.grads.dt_bias, &second.grads.dt_bias}},
                     {"dD", {&first.grads.D, &second.grads.D}},
                     {"dA_log", {&first.grads.A_log, &second.grads.A_log}}};
    for (const auto& [name, pair] : outputs)
      EXPECT_TRUE(same(*pair.first, *pair.second)) << name << " differs between runs";
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

// The forward always needs its checkpoint buffer, the backward the checkpoint and a workspace.
TEST(SelectiveScanCuda, RejectsMissingBuffers) {
  SAMBAY_REQUIRE_GPU();
  const SelectiveScanShape s{1, 4, 8, 16};
  DeviceBuffer<float> buffer(std::max(selective_scan_checkpoint_floats(s),
                                      selective_scan_backward_workspace_floats(s)));
  EXPECT_THROW(
      selective_scan_forward_cuda(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                  nullptr, nullptr, nullptr, nullptr, nullptr, s, nullptr),
      Error);
  EXPECT_THROW(selective_scan_backward_cuda(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                            nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                            buffer.ptr, nullptr, nullptr, nullptr, nullptr,
                                            nullptr, nullptr, nullptr, nullptr, nullptr, s,
                                            nullptr),
               Error);
  EXPECT_THROW(selective_scan_backward_cuda(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                            nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                            nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                            nullptr, nullptr, nullptr, buffer.ptr, s, nullptr),
               Error);
}

}  // namespace
}  // namespace sambay
