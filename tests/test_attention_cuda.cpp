// GPU attention against the CPU reference (attention.cpp, fp64) on the same bf16-rounded inputs.
// Every case runs once per implementation (the automatic choice, which is the Hopper kernels on
// an sm_90 GPU; the mma.sync kernels; the simple kernels), so each is held to the reference.
#include "kernels/attention.h"
#include "tests/attention_kernels.h"
#include "tests/gpu_buffer.h"
#include "tests/gpu_compare.h"
#include "tests/gpu_test.h"
#include "tests/test_util.h"

#include "core/check.h"
#include "core/cuda_runtime.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <ostream>
#include <string>
#include <vector>

namespace sambay {
namespace {

using testing::bf16_to_f64;
using testing::DeviceBuffer;
using testing::relative_error;
using testing::round_to_bf16;
using testing::to_bf16_vector;

// bf16 outputs and gradients: a few bf16 roundings (of P, of dS, of the result) per element.
constexpr double kBf16Tolerance = 1e-2;
// lse is fp32 all the way (products of bf16 inputs are exact in fp32).
constexpr double kFp32Tolerance = 1e-5;

struct CudaAttnCase {
  int64_t B, L, H, G, dk, dv, window;
  bool doc;
  int64_t Lk = 0, q_offset = 0;  // a query slice (context parallelism): L queries of Lk keys
  AttentionKernels kernels = AttentionKernels::automatic;
};

std::string name_of(const CudaAttnCase& c) {
  return fmt::format("B{}_L{}_H{}_G{}_dk{}_dv{}_{}{}{}_{}", c.B, c.L, c.H, c.G, c.dk, c.dv,
                     c.window ? fmt::format("w{}", c.window) : "full", c.doc ? "_doc" : "",
                     c.Lk ? fmt::format("_Lk{}_at{}", c.Lk, c.q_offset) : "",
                     testing::kernels_name(c.kernels));
}
void PrintTo(const CudaAttnCase& c, std::ostream* os) { *os << name_of(c); }



// Existing gradient contents, of the gradient's own size, so that += is checked meaningfully.
std::vector<double> prefill_like(const std::vector<double>& grad, uint64_t seed) {
  return round_to_bf16(testing::random_normal(grad.size(), seed, 0.5 * testing::rms(grad) + 1e-3));
}

std::vector<double> minus(const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> d(a.size());
  for (size_t i = 0; i < a.size(); ++i) d[i] = a[i] - b[i];
  return d;
}

// Normwise relative error against the reference. Where the reference is exactly zero (dq and dk
// when every query sees only its own key, as at L = 1: the softmax is constant) a relative error
// means nothing; the result must then be zero up to rounding (the kernels form dS = P (dP - D)
// from two fp32 dot products that agree only to rounding).
void expect_close(const std::vector<double>& got, const std::vector<double>& want,
                  const char* what) {
  double want_norm = 0, got_max = 0;
  for (double x : want) want_norm += x * x;
  for (double x : got) got_max = std::max(got_max, std::abs(x));
  if (want_norm == 0)
    EXPECT_LT(got_max, 1e-4) << what << " should be 0";
  else
    EXPECT_LT(relative_error(got, want), kBf16Tolerance) << what;
}

using testing::KernelChoice;

// Host inputs (bf16-rounded) and the fp64 CPU reference forward on them.
struct HostAttn {
  AttentionShape s;
  double scale;
  std::vector<double> q, k, v, dout, out, lse;
  std::vector<int32_t> doc;

  HostAttn(const CudaAttnCase& c, uint64_t seed)
      : s{c.B, c.L, c.H, c.G, c.dk, c.dv, c.window, c.Lk, c.q_offset},
        scale(1.0 / std::sqrt(double(c.dk))) {
    const int64_t Lk = attention_keys(s);
    q = round_to_bf16(testing::random_normal(c.B * c.L * c.H * c.dk, seed + 1));
    k = round_to_bf16(testing::random_normal(c.B * Lk * c.G * c.dk, seed + 2));
    v = round_to_bf16(testing::random_normal(c.B * Lk * c.G * c.dv, seed + 3));
    dout = round_to_bf16(testing::random_normal(c.B * c.L * c.H * c.dv, seed + 4));
    if (c.doc) doc = testing::make_docs(c.B, Lk);
    out.resize(dout.size());
    lse.resize(c.B * c.H * c.L);
    attention_forward(q.data(), k.data(), v.data(), doc_ptr(), out.data(), lse.data(), s, scale);
  }
  const int32_t* doc_ptr() const { return doc.empty() ? nullptr : doc.data(); }

  struct Grads {
    std::vector<double> dq, dk, dv;
  };
  Grads backward() const {
    Grads g{std::vector<double>(q.size()), std::vector<double>(k.size()),
            std::vector<double>(v.size())};
    attention_backward(dout.data(), q.data(), k.data(), v.data(), doc_ptr(), out.data(),
                       lse.data(), g.dq.data(), g.dk.data(), g.dv.data(), s, scale);
    return g;
  }
};

// The same inputs on the device, and the GPU forward's out and lse.
struct DeviceAttn {
  const HostAttn& h;
  DeviceBuffer<bf16> q, k, v, dout, out;
  DeviceBuffer<int32_t> doc;
  DeviceBuffer<float> lse;

  explicit DeviceAttn(const HostAttn& host)
      : h(host),
        q(to_bf16_vector(host.q)),
        k(to_bf16_vector(host.k)),
        v(to_bf16_vector(host.v)),
        dout(to_bf16_vector(host.dout)),
        out(static_cast<int64_t>(host.out.size())),
        doc(host.doc.empty() ? std::vector<int32_t>{0} : host.doc),
        lse(static_cast<int64_t>(host.lse.size())) {}
  const int32_t* doc_ptr() const { return h.doc.empty() ? nullptr : doc.ptr; }

  void forward() {
    out.poison();
    lse.poison();
    attention_forward_cuda(q.ptr, k.ptr, v.ptr, doc_ptr(), out.ptr, lse.ptr, h.s,
                           static_cast<float>(h.scale), nullptr);
  }
  void backward(bf16* dq, bf16* dk, bf16* dv) {
    attention_backward_cuda(dout.ptr, q.ptr, k.ptr, v.ptr, doc_ptr(), out.ptr, lse.ptr, dq, dk,
                            dv, h.s, static_cast<float>(h.scale), nullptr);
  }
};

class AttentionCudaTest : public ::testing::TestWithParam<CudaAttnCase> {};

TEST_P(AttentionCudaTest, ForwardMatchesCpu) {
  SAMBAY_REQUIRE_GPU();
  KernelChoice choice(GetParam().kernels);
  HostAttn host(GetParam(), 100);
  DeviceAttn dev(host);
  dev.forward();
  EXPECT_LT(relative_error(bf16_to_f64(dev.out.download()), host.out), kBf16Tolerance);
  EXPECT_LT(relative_error(dev.lse.download(), host.lse), kFp32Tolerance);
}

// Gradients are added into buffers that already hold values (checks +=, and that every element
// is written exactly once).
TEST_P(AttentionCudaTest, BackwardAccumulatesCpuGradients) {
  SAMBAY_REQUIRE_GPU();
  KernelChoice choice(GetParam().kernels);
  HostAttn host(GetParam(), 200);
  const HostAttn::Grads want = host.backward();
  DeviceAttn dev(host);
  dev.forward();
  const auto dq0 = prefill_like(want.dq, 201), dk0 = prefill_like(want.dk, 202),
             dv0 = prefill_like(want.dv, 203);
  DeviceBuffer<bf16> dq(to_bf16_vector(dq0)), dk(to_bf16_vector(dk0)), dv(to_bf16_vector(dv0));
  dev.backward(dq.ptr, dk.ptr, dv.ptr);
  expect_close(minus(bf16_to_f64(dq.download()), dq0), want.dq, "dq");
  expect_close(minus(bf16_to_f64(dk.download()), dk0), want.dk, "dk");
  expect_close(minus(bf16_to_f64(dv.download()), dv0), want.dv, "dv");
}

// A null gradient pointer skips that gradient and leaves the others right.
TEST_P(AttentionCudaTest, NullGradientsAreSkipped) {
  SAMBAY_REQUIRE_GPU();
  KernelChoice choice(GetParam().kernels);
  HostAttn host(GetParam(), 300);
  const HostAttn::Grads want = host.backward();
  DeviceAttn dev(host);
  dev.forward();
  DeviceBuffer<bf16> dq(static_cast<int64_t>(want.dq.size())),
      dk(static_cast<int64_t>(want.dk.size())), dv(static_cast<int64_t>(want.dv.size()));
  dq.zero();
  dev.backward(dq.ptr, nullptr, nullptr);
  expect_close(bf16_to_f64(dq.download()), want.dq, "dq");
  dk.zero();
  dv.zero();
  dev.backward(nullptr, dk.ptr, dv.ptr);
  expect_close(bf16_to_f64(dk.download()), want.dk, "dk");
  expect_close(bf16_to_f64(dv.download()), want.dv, "dv");
}

// Tiles: Hopper 128 queries x 128 keys forward (64 keys at dv 256), 128 keys x 64 queries
// backward; mma.sync 128 x 64 forward and 64 x 64 backward. So L = 1, 17, 65, 100, 127, 129,
// 130, 191, 257, 1000 cover partial tiles, a tile and one more, and many tiles. Windows: 1 (every
// query sees only itself), smaller than a tile, crossing tile edges (17, 63, 127, 129, 200), equal
// to L and beyond L. Documents (make_docs: lengths 1 to 40ish) start inside tiles.
INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionCudaTest,
    ::testing::ValuesIn(testing::with_every_kernel<CudaAttnCase>({
        {1, 1, 2, 2, 64, 64, 0, false},       // a single token
        {2, 17, 4, 2, 64, 64, 0, true},       // GQA 2, docs
        {1, 100, 4, 4, 64, 128, 0, false},    // GQA 1, dv = 2 dk
        {2, 257, 4, 1, 128, 128, 0, true},    // H = 4 G
        {1, 257, 2, 1, 128, 256, 64, false},  // window < L, dv = 2 dk
        {1, 100, 4, 2, 128, 128, 100, true},  // window = L
        {2, 130, 8, 2, 64, 128, 17, true},    // small odd window, H = 4 G
        {1, 200, 2, 2, 64, 64, 300, false},   // window > L
        {1, 65, 2, 1, 128, 256, 0, true},
        {1, 1000, 2, 1, 128, 128, 0, true},   // many tiles
        {1, 1000, 4, 2, 64, 128, 200, false}, // many tiles, window
        {1, 70, 2, 1, 64, 64, 1, true},       // window 1: exact dq = dk = 0
        {1, 127, 2, 2, 128, 128, 0, false},   // one short of a tile
        {2, 129, 4, 2, 128, 128, 127, false}, // one past a tile; window one short of a tile
        {1, 191, 8, 1, 64, 128, 129, true},   // GQA 8, window one past a tile, docs
        {1, 300, 2, 1, 128, 256, 63, true},   // dv 256 (64-key tiles), window crossing them
        {1, 520, 4, 2, 128, 128, 0, true},    // docs across many tiles
        {1, 33, 2, 1, 32, 48, 0, true},       // head dims without tensor-core kernels
        {2, 20, 3, 1, 80, 160, 7, false},
        {1, 50, 2, 2, 128, 64, 0, false},
    })),
    [](const auto& info) { return name_of(info.param); });

// Cross-attention: two query layers read one k/v, so two backward calls add into the same dk, dv.
TEST(AttentionCuda, SharedKvGradientsAccumulateAcrossCalls) {
  SAMBAY_REQUIRE_GPU();
  const CudaAttnCase c{2, 150, 4, 2, 64, 128, 0, true, false};
  HostAttn a(c, 400);
  HostAttn b(c, 500);
  b.k = a.k, b.v = a.v;  // the second layer reads the first one's k and v
  attention_forward(b.q.data(), b.k.data(), b.v.data(), b.doc_ptr(), b.out.data(), b.lse.data(),
                    b.s, b.scale);
  const HostAttn::Grads ga = a.backward(), gb = b.backward();
  DeviceAttn da(a), db(b);
  da.forward();
  db.forward();
  std::vector<double> want_dk(ga.dk.size()), want_dv(ga.dv.size());
  for (size_t i = 0; i < want_dk.size(); ++i) want_dk[i] = ga.dk[i] + gb.dk[i];
  for (size_t i = 0; i < want_dv.size(); ++i) want_dv[i] = ga.dv[i] + gb.dv[i];
  const auto dk0 = prefill_like(want_dk, 401), dv0 = prefill_like(want_dv, 402);
  DeviceBuffer<bf16> dk(to_bf16_vector(dk0)), dv(to_bf16_vector(dv0));
  da.backward(nullptr, dk.ptr, dv.ptr);
  db.backward(nullptr, dk.ptr, dv.ptr);
  expect_close(minus(bf16_to_f64(dk.download()), dk0), want_dk, "dk");
  expect_close(minus(bf16_to_f64(dv.download()), dv0), want_dv, "dv");
}

TEST(AttentionCuda, RejectsBadShapes) {
  SAMBAY_REQUIRE_GPU();
  const AttentionShape bad{1, 4, 3, 2, 64, 64, 0};  // H not a multiple of G
  EXPECT_THROW(attention_forward_cuda(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, bad,
                                      1.f, nullptr),
               Error);
}

// Query slices (context parallelism): L queries standing at q_offset among Lk keys. The Hopper
// kernels compute them (checked against the CPU's slices, which its own tests tie to the
// unsliced op); the other implementations refuse them before touching any memory.
class AttentionCudaSliceTest : public ::testing::TestWithParam<CudaAttnCase> {};

bool hopper_runs(const CudaAttnCase& c) {
  const bool dims = (c.dk == 64 && (c.dv == 64 || c.dv == 128)) ||
                    (c.dk == 128 && (c.dv == 128 || c.dv == 256));
  return cuda_compute_capability() == 90 && dims && c.kernels == AttentionKernels::automatic;
}

TEST_P(AttentionCudaSliceTest, MatchesCpuOrIsRefused) {
  SAMBAY_REQUIRE_GPU();
  KernelChoice choice(GetParam().kernels);
  HostAttn host(GetParam(), 600);
  DeviceAttn dev(host);
  if (!hopper_runs(GetParam())) {
    EXPECT_THROW(dev.forward(), Error);
    EXPECT_THROW(dev.backward(nullptr, nullptr, dev.dout.ptr), Error);
    return;
  }
  dev.forward();
  EXPECT_LT(relative_error(bf16_to_f64(dev.out.download()), host.out), kBf16Tolerance);
  EXPECT_LT(relative_error(dev.lse.download(), host.lse), kFp32Tolerance);
  const HostAttn::Grads want = host.backward();
  const auto dq0 = prefill_like(want.dq, 601), dk0 = prefill_like(want.dk, 602),
             dv0 = prefill_like(want.dv, 603);
  DeviceBuffer<bf16> dq(to_bf16_vector(dq0)), dk(to_bf16_vector(dk0)), dv(to_bf16_vector(dv0));
  dev.backward(dq.ptr, dk.ptr, dv.ptr);
  expect_close(minus(bf16_to_f64(dq.download()), dq0), want.dq, "dq");
  expect_close(minus(bf16_to_f64(dk.download()), dk0), want.dk, "dk");
  expect_close(minus(bf16_to_f64(dv.download()), dv0), want.dv, "dv");
}

// Slices of the load-balanced chunking (a rank's first and second chunk), keys beyond the last
// query, offsets inside a tile, windows and documents across the slice edge.
INSTANTIATE_TEST_SUITE_P(
    Slices, AttentionCudaSliceTest,
    ::testing::ValuesIn(testing::with_every_kernel<CudaAttnCase>({
        {1, 128, 4, 2, 128, 128, 0, false, 512, 128},  // chunk 1 of 4
        {1, 128, 4, 2, 128, 128, 0, true, 512, 384},   // chunk 3 of 4, docs
        {2, 100, 4, 4, 64, 128, 0, true, 300, 37},     // offset inside a tile
        {1, 90, 2, 1, 64, 64, 50, false, 400, 200},    // window, keys beyond the queries
        {1, 200, 4, 2, 128, 128, 129, true, 450, 250}, // window crossing the slice edge
        {1, 150, 2, 1, 128, 256, 0, true, 400, 190},   // dv 256
    })),
    [](const auto& info) { return name_of(info.param); });

}  // namespace
}  // namespace sambay
