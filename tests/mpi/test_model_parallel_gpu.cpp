// Tensor and data parallelism of the GPU model under mpirun, with 1 or 2 ranks sharing the one
// GPU of the GPU machine (host-staged MPI communicators: NCCL cannot put two ranks on one GPU),
// against the single-rank GPU model on the same parameters and micro-batches. GPU tests skip
// without a GPU; the refusals (context parallelism, the nGMU under TP, a TP group on host
// buffers) are checked before any GPU work, so they run anywhere with 2 ranks.
//
// TP: this rank's shard (make_model_shard) on the GPU; loss on every rank and the gradients,
// gathered over TP into whole tensors, against the single-rank run; TP+SP (sequence parallelism:
// the residual stream, norms, embedding and loss on this rank's rows) likewise. With one rank the
// "TP group" has size 1 and the results must be bit-identical (the single-rank path is unchanged).
// DP: each rank runs its half of the micro-batches on the whole model, fp32 gradients summed
// over the ranks.
//
// A reference for "summation order only": the single-rank model whose TP-split channels (Mamba
// and GMU inner channels, MLP columns, attention heads) are permuted, the two TP halves swapped.
// It computes the same function; only the order of the row-parallel sums (and the heads' sum
// into the lambda gradients) changes. Its gradients, permuted back, are compared with the
// unpermuted run's and printed beside the TP error.
#include "core/cuda_runtime.h"
#include "core/gpu_model.h"
#include "core/model.h"
#include "parallel/process_grid.h"
#include "tests/gpu_test.h"
#include "tests/model_test_data.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>

namespace sambay {
namespace {

// The GPU kernels need GPU-shaped sizes (the scan N in {4, 8, 16}, attention head dims that are
// multiples of 16), which the tiny presets of tests/mpi/test_model_parallel.cpp (N = 3, head dim
// 3) are not: the GPU model tests' config, with enough heads for two TP ranks (differential
// attention keeps head pairs on one rank: 8 query and 4 key/value heads). Under TP2 a rank runs
// d_inner 64, d_ff 48, 4 and 2 heads.
ModelConfig gpu_config(const std::string& variant) {
  ModelConfig c = testing::gpu_test_config(variant);
  c.n_heads = 8, c.n_kv_heads = 4;
  return c;
}

const char* const kVariants[] = {"sambay-da", "sambay", "samba-yoco", "transformerpp"};

constexpr int64_t kB = 2, kL = 40, kMicroBatches = 4;

std::vector<testing::TokenBatch> global_batch(const ModelConfig& c) {
  std::vector<testing::TokenBatch> batch;
  for (int64_t m = 0; m < kMicroBatches; ++m)
    batch.push_back(testing::random_token_batch(c.vocab, kB, kL, 31 + m));
  return batch;
}

int64_t valid_targets(const std::vector<testing::TokenBatch>& batch) {
  int64_t n = 0;
  for (const testing::TokenBatch& mb : batch)
    n += testing::valid_targets(mb.targets);
  return n;
}

// make_model's parameters (seed 5) plus N(0, 0.05^2) noise, as tests/test_gpu_model_cuda.cpp
// does (with the 0.02 init alone the net is nearly linear and some paths carry little signal),
// rounded to bf16 values so that the fp64 CPU model computes with the GPU's weights.
Model<float> full_model(const ModelConfig& c) {
  Model<float> m = make_model<float>(c, 5);
  const std::vector<double> noise = testing::random_normal(int64_t(m.params.size()), 6, 0.05);
  for (size_t i = 0; i < noise.size(); ++i)
    m.params[i] = to_float(to_bf16(m.params[i] + float(noise[i])));
  return m;
}

struct GpuRun {
  double loss = 0;           // summed over the micro-batches run
  std::vector<float> grads;  // the model's layout
};

// Forward and backward of micro-batches [first, first + count) on a fresh GPU copy of `cpu`,
// gradients scaled by 1 / valid (valid targets of the whole global batch), then TP's partial
// whole-tensor gradients reduced.
template <typename T>
GpuRun run_on_gpu(const Model<T>& cpu, const std::vector<testing::TokenBatch>& batch, size_t first,
                  size_t count, int64_t valid, bool recompute = false) {
  cudaStream_t stream = cuda_stream_create();
  GpuRun run;
  {
    GpuModel gpu = make_gpu_model(cpu, stream);
    GpuActivations acts = plan_gpu_activations(gpu, kB, kL, recompute);
    for (size_t k = first; k < first + count; ++k) {
      const testing::TokenBatch& mb = batch[k];
      upload_batch(gpu, acts, mb.tokens.data(), mb.targets.data(), mb.doc.data());
      run.loss += gpu_model_forward(gpu, acts, true).loss_sum;
      gpu_model_backward(gpu, acts, true, 1.0f / float(valid));
    }
    gpu_reduce_tensor_parallel_grads(gpu);
    run.grads = download_grads(gpu);
  }
  cuda_stream_destroy(stream);
  return run;
}

// The fp64 CPU model on the same parameters and micro-batches: the values the bf16 GPU runs
// approximate (the single-rank GPU run's error against it is printed as the bf16 noise floor).
GpuRun run_fp64(const ModelConfig& mc, const Model<float>& full,
                const std::vector<testing::TokenBatch>& batch, int64_t valid) {
  Model<double> cpu = make_model<double>(mc, 5);
  std::copy(full.params.begin(), full.params.end(), cpu.params.begin());
  Activations<double> acts = plan_activations(cpu, kB, kL, false);
  GpuRun run;
  for (const testing::TokenBatch& mb : batch) {
    run.loss +=
        model_forward(cpu, acts, mb.tokens.data(), mb.targets.data(), mb.doc.data()).loss_sum;
    model_backward(cpu, acts, mb.tokens.data(), mb.targets.data(), mb.doc.data(), 1.0 / valid);
  }
  run.grads.assign(cpu.grads.begin(), cpu.grads.end());
  return run;
}

// The full-layout values with the two TP halves of every split tensor swapped (an involution):
// rank 0's pieces go where rank 1's were and back.
std::vector<float> swap_tp_halves(const ModelConfig& c, const ParamLayout& full,
                                  const std::vector<float>& values) {
  const ParamLayout half = build_param_layout(tensor_parallel_config(c, 2));
  std::vector<float> piece(half.total), out(full.total, NAN);
  for (int r = 0; r < 2; ++r) {
    shard_params(full, half, values.data(), piece.data(), 2, r);
    unshard_params(full, half, piece.data(), out.data(), 2, 1 - r);
  }
  return out;
}

// The summation-order reference is only that if the swapped model computes the same function:
// checked on the CPU in fp64 (no GPU needed), loss and gradients (swapped back) to rounding.
TEST(ModelParallelGpu, SwappedTpHalvesComputeTheSameFunction) {
  for (const char* variant : kVariants) {
    const ModelConfig mc = gpu_config(variant);
    const testing::TokenBatch mb = testing::random_token_batch(mc.vocab, kB, kL, 31);
    const Model<float> f32 = full_model(mc);
    Model<double> models[2] = {make_model<double>(mc, 5), make_model<double>(mc, 5)};
    std::copy(f32.params.begin(), f32.params.end(), models[0].params.begin());
    const std::vector<float> swapped = swap_tp_halves(mc, f32.layout, f32.params);
    ASSERT_NE(swapped, f32.params) << variant << ": nothing was swapped";
    std::copy(swapped.begin(), swapped.end(), models[1].params.begin());
    double loss[2];
    std::vector<float> grads[2];
    for (int s = 0; s < 2; ++s) {
      Activations<double> acts = plan_activations(models[s], kB, kL, false);
      loss[s] = model_forward(models[s], acts, mb.tokens.data(), mb.targets.data(), mb.doc.data())
                    .loss_sum;
      model_backward(models[s], acts, mb.tokens.data(), mb.targets.data(), mb.doc.data(), 1.0);
      grads[s].assign(models[s].grads.begin(), models[s].grads.end());
    }
    grads[1] = swap_tp_halves(mc, f32.layout, grads[1]);
    EXPECT_NEAR(loss[1], loss[0], 1e-12 * std::abs(loss[0])) << variant;
    for (const ParamSpec& p : f32.layout.params) {
      std::vector<double> want(grads[0].begin() + p.offset, grads[0].begin() + p.offset + p.numel);
      std::vector<float> got(grads[1].begin() + p.offset, grads[1].begin() + p.offset + p.numel);
      EXPECT_LT(testing::relative_error(got, want), 1e-6) << variant << " " << p.name;
    }
  }
}

// Normwise relative errors per parameter tensor against a reference run.
struct Comparison {
  double loss = 0;  // |loss - ref| / |ref|
  double worst = 0;
  std::string worst_name;
  std::vector<double> per_tensor;  // in layout order
};

Comparison compare(const ParamLayout& layout, const GpuRun& got, const GpuRun& ref) {
  Comparison c;
  c.loss = std::abs(got.loss - ref.loss) / std::abs(ref.loss);
  for (const ParamSpec& p : layout.params) {
    const auto g0 = got.grads.begin() + p.offset, r0 = ref.grads.begin() + p.offset;
    const std::vector<float> g(g0, g0 + p.numel);
    const std::vector<double> r(r0, r0 + p.numel);
    const double err = testing::relative_error(g, r);
    c.per_tensor.push_back(err);
    if (!(err <= c.worst)) c.worst = err, c.worst_name = p.name;
  }
  return c;
}

void expect_bit_identical(const GpuRun& got, const GpuRun& ref, const std::string& what) {
  EXPECT_EQ(got.loss, ref.loss) << what << ": loss";
  ASSERT_EQ(got.grads.size(), ref.grads.size()) << what;
  for (size_t i = 0; i < got.grads.size(); ++i)
    ASSERT_EQ(got.grads[i], ref.grads[i]) << what << ": gradient element " << i;
}

int world_size() {
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

bool print_rank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank == 0;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Tolerances of TP2 against the single-rank GPU run: normwise relative per gradient tensor, and
// relative for the summed loss. Under TP the row-parallel sums are reduced in fp32 and rounded
// to bf16 once, as one rank's GEMM does, but TP runs every GEMM at another shape (half the output
// columns or half the contraction), for which cuBLASLt may pick other kernels and so another
// fp32 accumulation order, the partial gradients of Mamba's B and C are summed in bf16, and where
// one rank rounds between the products that add into a region's input gradient, TP does not.
// In bf16 a changed last fp32 bit can flip a rounding, and Mamba's B and C (shared by every
// channel) and the scan's recurrence spread a flip over later tokens and channels: TP and one
// rank are two bf16 evaluations of the same sums in different orders, and they differ by about
// either one's own bf16 error. The bounds of that band, printed by this test (H100):
//  - below, the summation-order reference above (same GEMM shapes, only the row-parallel sums
//    reordered): worst tensor 3.1e-3 (Transformer++) to 1.4e-2 (SambaY+DA); loss up to 6e-6;
//  - above, the single-rank GPU run against the fp64 CPU model: worst tensor 1.0e-2
//    (Transformer++) to 2.7e-2 (SambaY), 7.1e-2 for the top layer's lambdas (SambaY+DA); loss up
//    to 3.7e-5 (tests/test_gpu_model_cuda.cpp holds it to 3e-2 per tensor, 1e-2 on the loss).
// Measured TP2 against one rank (H100): loss 6e-6 to 5.3e-5; gradients median 1.0e-2 (models
// with Mamba) and 2.5e-3 (Transformer++), worst 1.9e-2 (SambaY+DA's x_proj), Transformer++
// 5.6e-3. Held to 4e-2 per tensor (the band's top, with room for another card's kernel choices)
// and 5e-4 on the loss: errors of the parallel code itself (a sum missing or doubled, the output
// bias added on both ranks) move them by far more. Differential attention's lambda vectors and
// head norm (tp_partial_grad) are sums over heads that cancel (tests/mpi/test_model_parallel.cpp):
// where that makes the one-rank run itself inaccurate (the top cross-attention layer's lambdas:
// 7.1e-2 against fp64), two bf16 evaluations can differ by up to about twice that (measured
// 1.5e-1): those tensors are held to the larger of 4e-2 and three times the one-rank run's own
// error against fp64 for that tensor. The other layers' lambdas (at most 1.2e-2) and the head
// norms (at most 6.8e-3), well conditioned, stay under 4e-2: a missing or doubled reduction of
// the partial gradients shows there.
constexpr double kTpLossTolerance = 5e-4;
constexpr double kTpGradTolerance = 4e-2;
constexpr double kTpPartialGradFloorFactor = 3;
// DP2 runs the same micro-batches through the same kernels: losses are the same numbers, and
// the fp32 gradients differ only in the order of the micro-batch sum (fp32 epsilon 1.2e-7;
// 1e-5 as for fp32 in tests/mpi/test_model_parallel.cpp). Measured (H100): loss identical,
// gradients at most 2.2e-7.
constexpr double kDpLossTolerance = 1e-9;
constexpr double kDpGradTolerance = 1e-5;

// TP (with sequence parallelism when `sequence_parallel`) against the single-rank GPU run, over
// the four variants; see the tolerances above. Under SP the residual stream, norms, embedding and
// loss run on B L / 2 rows per rank, the regions gather their input and reduce-scatter their
// output: the same sums as TP's all-reduce, cut by rows, so the same tolerances hold (the
// whole-tensor gradients are each rank's rows' part, summed over TP in fp32). Measured (H100):
// TP2+SP's loss and per-tensor gradient errors equal TP2's to the three digits printed.
void check_tensor_parallel(bool sequence_parallel) {
  const int world = world_size();
  ProcessGrid grid = make_process_grid(world, 1);  // every rank in one TP group
  const Communicator tp = make_communicator(grid.tp, CommBackend::mpi_host_staged, "tp");
  const Communicator tp_host = make_communicator(grid.tp, CommBackend::mpi, "tp_host");
  const std::string layout = fmt::format("TP{}{}", tp.size, sequence_parallel ? "+SP" : "");
  for (const char* variant : kVariants) {
    const auto t0 = std::chrono::steady_clock::now();
    const ModelConfig mc = gpu_config(variant);
    const std::vector<testing::TokenBatch> batch = global_batch(mc);
    const int64_t valid = valid_targets(batch);
    const Model<float> full = full_model(mc);
    const GpuRun ref = run_on_gpu(full, batch, 0, batch.size(), valid);

    // Summation-order reference: the swapped model's gradients, swapped back.
    Model<float> swapped = full;
    swapped.params = swap_tp_halves(mc, full.layout, full.params);
    GpuRun order = run_on_gpu(swapped, batch, 0, batch.size(), valid);
    order.grads = swap_tp_halves(mc, full.layout, order.grads);
    const Comparison base = compare(full.layout, order, ref);

    ModelSplit split;
    split.tp = &tp, split.sequence_parallel = sequence_parallel;
    Model<float> shard = make_model_shard<float>(mc, 5, split);
    shard_params(full.layout, shard.layout, full.params.data(), shard.params.data(), tp.size,
                 tp.rank);
    GpuRun mine = run_on_gpu(shard, batch, 0, batch.size(), valid);
    // Recompute re-runs each layer's forward, collectives included: bit-identical gradients.
    expect_bit_identical(run_on_gpu(shard, batch, 0, batch.size(), valid, true), mine,
                         std::string(variant) + " " + layout + " with recompute");
    // Whole tensors: every TP rank's shard, gathered and put back in place.
    std::vector<float> shards(shard.layout.total * tp.size);
    all_gather(tp_host, mine.grads.data(), shards.data(), shard.layout.total, DType::f32);
    GpuRun tp_run{mine.loss, std::vector<float>(full.layout.total, NAN)};
    for (int r = 0; r < tp.size; ++r)
      unshard_params(full.layout, shard.layout, shards.data() + r * shard.layout.total,
                     tp_run.grads.data(), tp.size, r);

    if (tp.size == 1) {
      expect_bit_identical(tp_run, ref, std::string(variant) + " " + layout);
    } else {
      const Comparison c = compare(full.layout, tp_run, ref);
      // The one-rank GPU run's own error against fp64 (the bf16 noise floor).
      const Comparison noise_floor =
          compare(full.layout, ref, run_fp64(mc, full, batch, valid));
      EXPECT_LE(c.loss, kTpLossTolerance) << variant << ": " << layout << " loss " << tp_run.loss
                                          << " vs single-rank " << ref.loss;
      for (size_t i = 0; i < full.layout.params.size(); ++i) {
        const double floor_bound = kTpPartialGradFloorFactor * noise_floor.per_tensor[i];
        const double tolerance = full.layout.params[i].tp_partial_grad
                                     ? std::max(kTpGradTolerance, floor_bound)
                                     : kTpGradTolerance;
        EXPECT_LE(c.per_tensor[i], tolerance)
            << variant << " " << full.layout.params[i].name
            << ": " << layout
            << " gradient differs from the single-rank run (summation-order reference "
            << base.per_tensor[i] << ", one rank vs fp64 " << noise_floor.per_tensor[i]
            << ")";
      }
      if (print_rank() && std::getenv("SAMBAY_TEST_TABLE"))
        for (size_t i = 0; i < full.layout.params.size(); ++i)
          fmt::print("  {:<40} {} {:.2e}  order ref {:.2e}  one rank vs fp64 {:.2e}\n",
                     full.layout.params[i].name, layout, c.per_tensor[i], base.per_tensor[i],
                     noise_floor.per_tensor[i]);
      if (print_rank())
        fmt::print("{} {}: loss rel diff {:.2e} (order ref {:.2e}, one rank vs fp64 {:.2e}); "
                   "worst gradient {:.2e} ({}), order ref worst {:.2e} ({}), one rank vs fp64 "
                   "worst {:.2e} ({}); {:.1f} s\n",
                   variant, layout, c.loss, base.loss, noise_floor.loss, c.worst,
                   c.worst_name, base.worst, base.worst_name, noise_floor.worst,
                   noise_floor.worst_name, seconds_since(t0));
    }
    if (tp.size == 1 && print_rank())
      fmt::print("{} {}: bit-identical to the single-rank run; summation-order reference: loss "
                 "{:.2e}, worst gradient {:.2e} ({}); {:.1f} s\n",
                 variant, layout, base.loss, base.worst, base.worst_name, seconds_since(t0));
  }
}

TEST(ModelParallelGpu, TensorParallelMatchesSingleRank) {
  SAMBAY_REQUIRE_GPU();
  if (world_size() > 2) GTEST_SKIP() << "written for 1 or 2 ranks, got " << world_size();
  check_tensor_parallel(false);
}

// With one rank the TP group has size 1 and SP is off (bit-identical to the single-rank run).
TEST(ModelParallelGpu, SequenceParallelMatchesSingleRank) {
  SAMBAY_REQUIRE_GPU();
  if (world_size() > 2) GTEST_SKIP() << "written for 1 or 2 ranks, got " << world_size();
  check_tensor_parallel(true);
}

TEST(ModelParallelGpu, DataParallelMatchesSingleRank) {
  SAMBAY_REQUIRE_GPU();
  const int world = world_size();
  if (world > 2) GTEST_SKIP() << "written for 1 or 2 ranks, got " << world;
  ProcessGrid grid = make_process_grid(1, 1);  // every rank a DP rank
  const Communicator dp = make_communicator(grid.dp, CommBackend::mpi_host_staged, "dp");
  const Communicator dp_host = make_communicator(grid.dp, CommBackend::mpi, "dp_host");
  for (const char* variant : kVariants) {
    const auto t0 = std::chrono::steady_clock::now();
    const ModelConfig mc = gpu_config(variant);
    const std::vector<testing::TokenBatch> batch = global_batch(mc);
    const int64_t valid = valid_targets(batch);
    const Model<float> full = full_model(mc);
    const GpuRun ref = run_on_gpu(full, batch, 0, batch.size(), valid);

    const size_t per_rank = batch.size() / dp.size;
    GpuRun mine;
    cudaStream_t stream = cuda_stream_create();
    {
      GpuModel gpu = make_gpu_model(full, stream);
      GpuActivations acts = plan_gpu_activations(gpu, kB, kL, false);
      for (size_t k = dp.rank * per_rank; k < (dp.rank + 1) * per_rank; ++k) {
        const testing::TokenBatch& mb = batch[k];
        upload_batch(gpu, acts, mb.tokens.data(), mb.targets.data(), mb.doc.data());
        mine.loss += gpu_model_forward(gpu, acts, true).loss_sum;
        gpu_model_backward(gpu, acts, true, 1.0f / float(valid));
      }
      cuda_stream_synchronize(stream);  // the host-staged reduction copies outside the stream
      all_reduce(dp, gpu.grads, gpu.grads, gpu.layout.total, DType::f32, ReduceOp::sum);
      mine.grads = download_grads(gpu);
    }
    cuda_stream_destroy(stream);
    mine.loss = all_reduce_scalar(dp_host, mine.loss);

    if (dp.size == 1) {
      expect_bit_identical(mine, ref, std::string(variant) + " DP1");
    } else {
      const Comparison c = compare(full.layout, mine, ref);
      EXPECT_LE(c.loss, kDpLossTolerance) << variant << ": DP2 loss " << mine.loss
                                          << " vs single-rank " << ref.loss;
      for (size_t i = 0; i < full.layout.params.size(); ++i)
        EXPECT_LE(c.per_tensor[i], kDpGradTolerance)
            << variant << " " << full.layout.params[i].name
            << ": DP2 gradient differs from the single-rank run";
      if (print_rank())
        fmt::print("{} DP{}: loss rel diff {:.2e}; worst gradient {:.2e} ({}); {:.1f} s\n", variant,
                   dp.size, c.loss, c.worst, c.worst_name, seconds_since(t0));
    }
  }
}

// A sambay::Error whose message holds `needle`.
template <typename F>
void expect_refused(F make, const std::string& needle) {
  try {
    make();
    ADD_FAILURE() << "expected a sambay::Error mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(ModelParallelGpu, RefusesWhatIsCpuOnly) {
  if (world_size() != 2) GTEST_SKIP() << "needs 2 ranks, got " << world_size();
  const ModelConfig mc = gpu_config("sambay");
  {
    ProcessGrid grid = make_process_grid(2, 1);
    const Communicator tp = make_communicator(grid.tp, CommBackend::mpi_host_staged, "tp");
    ModelSplit split;
    split.tp = &tp;
    ModelConfig ngmu = mc;
    ngmu.normalized_gmu = true;
    const Model<float> n = make_model_shard<float>(ngmu, 5, split);
    expect_refused([&] { make_gpu_model(n, nullptr); }, "nGMU under tensor parallelism");

    const Communicator tp_host = make_communicator(grid.tp, CommBackend::mpi, "tp_host");
    split.tp = &tp_host;
    const Model<float> h = make_model_shard<float>(mc, 5, split);
    expect_refused([&] { make_gpu_model(h, nullptr); }, "needs a communicator on device buffers");
  }
  {
    ProcessGrid grid = make_process_grid(1, 2);
    const Communicator cp = make_communicator(grid.cp, CommBackend::mpi_host_staged, "cp");
    ModelSplit split;
    split.cp = &cp;
    const Model<float> m = make_model_shard<float>(mc, 5, split);
    expect_refused([&] { make_gpu_model(m, nullptr); }, "context parallelism (cp = 2) is CPU-only");
  }
}

}  // namespace
}  // namespace sambay
