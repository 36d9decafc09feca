#include "core/gpu_model.h"

#include "core/check.h"
#include "core/model_graph.h"
#include "core/cuda_runtime.h"
#include "kernels/activations.h"
#include "kernels/attention.h"
#include "kernels/causal_conv1d.h"
#include "kernels/cross_entropy.h"
#include "kernels/diff_attention.h"
#include "kernels/embedding.h"
#include "kernels/gemm.h"
#include "kernels/gmu.h"
#include "kernels/layernorm.h"
#include "kernels/linear.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/scale.h"
#include "kernels/selective_scan.h"

#include <algorithm>
#include <cmath>

namespace sambay {

namespace {

void zero(bf16* p, int64_t n, cudaStream_t s) { cuda_memset_zero_async(p, sizeof(bf16) * n, s); }

// ---- Tensor parallelism ----

// The TP group when it has more than one rank; null otherwise (the single-rank path).
const Communicator* tensor_parallel_group(const ModelSplit& s) {
  return s.tp && s.tp->size > 1 ? s.tp : nullptr;
}

// What the GPU model runs of a split: TP, with or without SP (refused before any GPU work).
void check_gpu_split(const ModelConfig& c, const ModelSplit& s) {
  if (s.cp && s.cp->size > 1)
    fail("model '{}': context parallelism (cp = {}) is CPU-only for now; the GPU model runs "
         "tensor (and sequence) and data parallelism only",
         c.name, s.cp->size);
  const Communicator* tp = tensor_parallel_group(s);
  if (!tp) return;
  if (c.normalized_gmu && layer_kinds_present(c).gmu)
    fail("model '{}': the nGMU under tensor parallelism (tp = {}) is CPU-only for now: its norm "
         "spans every TP rank's channels",
         c.name, tp->size);
  if (tp->backend == CommBackend::mpi)
    fail("model '{}': tensor parallelism on the GPU needs a communicator on device buffers "
         "(mpi_host_staged or nccl), but group '{}' has backend {}",
         c.name, tp->name, backend_name(tp->backend));
}

// Sums count values of buf (device memory written on st) over the TP group, in place. st is
// synchronised first: the MPI backends stage through the host with copies outside st, and NCCL
// runs on its own stream; on return the sum is in place (NCCL is waited for). No-op without a
// TP group.
void tp_sum(const Communicator* tp, void* buf, int64_t count, DType type, cudaStream_t st) {
  if (!tp) return;
  cuda_stream_synchronize(st);
  all_reduce(*tp, buf, buf, count, type, ReduceOp::sum);
  wait(*tp);
}

// Sums fp32 partials over the TP group and writes the total, rounded once to bf16, to out (the
// rounding the single-rank GEMM does when it writes its bf16 output). The conversion runs on the
// legacy default stream, synchronised before st's later work.
void tp_sum_to_bf16(const Communicator* tp, float* partial, bf16* out, int64_t count,
                    cudaStream_t st) {
  tp_sum(tp, partial, count, DType::f32, st);
  convert_to_bf16_cuda(partial, out, count);
  cuda_stream_synchronize(nullptr);
}

// Everything a layer's forward and backward read: sizes, parameters, the batch, the stream.
struct Ctx {
  const ModelConfig& c;
  const GraphDims& m;
  int layer;
  const float* P;       // fp32 master
  const bf16* W;        // bf16 compute copy
  const LayerOffsets& o;
  const int32_t* doc;
  const GpuActivations& acts;
  cudaStream_t st;
  GpuProfile* profile;
  const Communicator* tp;  // tensor_parallel_group: null for one rank
  int tp_rank;
  bool sp;       // sequence parallel (under TP)
  int64_t nr;    // residual-stream rows this rank keeps: m.n, or m.n / tp under SP
  int64_t row0;  // the first of them among the micro-batch's m.n rows
  float attention_scale;  // GpuModel::attention_scale
};

// Where this rank stands among the micro-batch's n rows (the CPU model's RowSplit): all of them,
// or under SP rows [rank nr, (rank + 1) nr) with nr = n / tp.
struct GpuRows {
  bool sp = false;
  int64_t nr = 0, row0 = 0;
};

GpuRows gpu_row_split(const ModelSplit& s, int64_t n) {
  GpuRows r;
  r.nr = n;
  const Communicator* tp = tensor_parallel_group(s);
  if (!tp || !s.sequence_parallel) return r;
  SAMBAY_CHECK(n % tp->size == 0,
               "sequence parallelism needs B * L = {} rows divisible by tensor-parallel size {}", n,
               tp->size);
  r.sp = true, r.nr = n / tp->size, r.row0 = tp->rank * r.nr;
  return r;
}

// Under TP the row-parallel sums are reduced in fp32 and rounded to bf16 once, after the sum,
// where the single-rank GEMM rounds its fp32 accumulation once: TP and one rank then differ by
// the order of fp32 additions. The partials are made by the same GEMMs with fp32 output, in
// acts.tp_partial.

// y[n, out] = x W^T (+ bias): into y (bf16) on one rank; under TP this rank's fp32 partial into
// `partial` instead (the region exit or x_proj sums it).
void row_parallel_forward(const Ctx& x, const bf16* in, const bf16* w, const float* bias, bf16* y,
                          float* partial, int64_t k, int64_t out) {
  if (!x.tp)
    linear_forward_cuda(in, w, bias, y, x.m.n, k, out, x.st);
  else
    gemm_bf16_cuda(false, true, x.m.n, out, k, 1.0f, in, k, w, k, 0.0f, partial, out, bias, x.st);
}

// linear_backward_cuda of one of a region's column-parallel products, its input gradient added
// into g.da (bf16) on one rank; under TP the input gradient goes to the fp32 partial in
// acts.tp_partial instead (written by the region's first product, added by the others), which
// the region's entry sums.
void region_linear_backward(const Ctx& x, const bf16* dy, const bf16* in, const bf16* w, bf16* da,
                            float* dw, float* db, int64_t k, int64_t out, bool first) {
  if (!x.tp) {
    linear_backward_cuda(dy, in, w, da, dw, db, x.m.n, k, out, x.st);
    return;
  }
  gemm_bf16_cuda(false, false, x.m.n, k, out, 1.0f, dy, out, w, k, first ? 0.0f : 1.0f,
                 x.acts.tp_partial, k, nullptr, x.st);
  linear_backward_cuda(dy, in, w, nullptr, dw, db, x.m.n, k, out, x.st);
}

// A region's exit (its [n, d] output) or entry (its input's gradient): under TP the fp32 partial
// sums in acts.tp_partial, summed over the group and rounded into out; under SP reduce-scattered
// instead, this rank's nr rows of the total rounded once into out's first nr rows. Returns out
// (the rows of the residual stream this rank keeps).
bf16* region_sum(const Ctx& x, bf16* out) {
  if (!x.tp) return out;
  if (!x.sp) {
    tp_sum_to_bf16(x.tp, x.acts.tp_partial, out, x.m.n * x.m.d, x.st);
    return out;
  }
  float* mine = x.acts.tp_partial + x.row0 * x.m.d;
  cuda_stream_synchronize(x.st);
  reduce_scatter(*x.tp, x.acts.tp_partial, mine, x.nr * x.m.d, DType::f32, ReduceOp::sum);
  wait(*x.tp);
  convert_to_bf16_cuda(mine, out, x.nr * x.m.d);
  cuda_stream_synchronize(nullptr);  // the conversion ran on the legacy default stream
  return out;
}

// A region's entry: the normed input [n, d] every TP rank reads whole. Under SP this rank's nr
// rows are all-gathered into acts.region_in (also in backward, which gathers the saved rows again
// rather than keeping them whole); otherwise `rows` already holds all of them.
const bf16* region_input(const Ctx& x, const bf16* rows) {
  if (!x.sp) return rows;
  cuda_stream_synchronize(x.st);
  all_gather(*x.tp, rows, x.acts.region_in, x.nr * x.m.d, DType::bf16);
  wait(*x.tp);
  return x.acts.region_in;
}

// The gradient of a block's output, [n, d] whole, into dbranch: rs * dres on this rank's rows,
// all-gathered over the TP group under SP (the transpose of the region exit's reduce-scatter).
// Called inside the profiled op `family`, which the all-gather is kept out of.
const bf16* block_output_grad(const Ctx& x, const bf16* dres, float rs, bf16* dbranch,
                              OpFamily family) {
  bf16* mine = dbranch + x.row0 * x.m.d;
  scale_forward_cuda(dres, rs, mine, x.nr * x.m.d, x.st);
  if (x.sp) {
    end_op(x.profile);
    cuda_stream_synchronize(x.st);
    all_gather(*x.tp, mine, dbranch, x.nr * x.m.d, DType::bf16);
    wait(*x.tp);
    begin_op(x.profile, family);
  }
  return dbranch;
}

void norm_forward(const ModelConfig& c, const bf16* x, const float* w, const float* b, bf16* y,
                  float* mean, float* rstd, int64_t rows, cudaStream_t st) {
  const float eps = static_cast<float>(c.norm_eps);
  if (c.norm == NormKind::layernorm)
    layernorm_forward_cuda(x, w, b, y, mean, rstd, rows, c.d_model, eps, st);
  else
    rmsnorm_forward_cuda(x, w, y, rstd, rows, c.d_model, eps, st);
}

// x_out = x + scale * delta, y = norm(x_out), in one pass.
void norm_residual_forward(const ModelConfig& c, const bf16* x, const bf16* delta, float scale,
                           bf16* x_out, const float* w, const float* b, bf16* y, float* mean,
                           float* rstd, int64_t rows, cudaStream_t st) {
  const float eps = static_cast<float>(c.norm_eps);
  if (c.norm == NormKind::layernorm)
    layernorm_residual_forward_cuda(x, delta, scale, x_out, w, b, y, mean, rstd, rows, c.d_model,
                                    eps, st);
  else
    rmsnorm_residual_forward_cuda(x, delta, scale, x_out, w, y, rstd, rows, c.d_model, eps, st);
}

void norm_backward(const ModelConfig& c, const bf16* dy, const bf16* x, const float* w,
                   const float* mean, const float* rstd, bf16* dx, float* dw, float* db,
                   int64_t rows, cudaStream_t st) {
  if (c.norm == NormKind::layernorm)
    layernorm_backward_cuda(dy, x, w, mean, rstd, dx, dw, db, rows, c.d_model, st);
  else
    rmsnorm_backward_cuda(dy, x, w, rstd, dx, dw, rows, c.d_model, st);
}

// Mixer forward: reads `in` [n, d] (the normed input, whole), writes the internals and `out`
// [n, d] (under TP this rank's fp32 partial into acts.tp_partial instead).
void mixer_forward(const Ctx& x, GpuLayerActivations& a, const bf16* in, bf16* out) {
  const ModelConfig& c = x.c;
  const GraphDims& m = x.m;
  const LayerOffsets& o = x.o;
  const float* P = x.P;
  const bf16* W = x.W;
  const LayerKind kind = c.layers[x.layer];
  switch (kind) {
    case LayerKind::mamba: {
      const bf16* w_in = W + o.in_proj_w;
      begin_op(x.profile, OpFamily::projection);
      linear_forward_cuda(in, w_in, nullptr, a.xin, m.n, m.d, m.E, x.st);
      linear_forward_cuda(in, w_in + m.E * m.d, nullptr, a.z, m.n, m.d, m.E, x.st);
      end_op(x.profile);
      begin_op(x.profile, OpFamily::conv);
      causal_conv1d_silu_forward_cuda(a.xin, P + o.conv_w, P + o.conv_b, x.doc, a.xs, m.B, m.L,
                                      m.E, m.K, x.st);
      end_op(x.profile);
      const bf16* w_x = W + o.x_proj_w;
      begin_op(x.profile, OpFamily::projection);
      // x_proj is row-parallel (its input channels are split): under TP its three outputs are
      // fp32 partials, side by side, summed in one collective.
      float* px = x.acts.tp_partial;
      row_parallel_forward(x, a.xs, w_x, nullptr, a.dl, px, m.E, m.R);
      row_parallel_forward(x, a.xs, w_x + m.R * m.E, nullptr, a.bc, px + m.n * m.R, m.E, m.N);
      row_parallel_forward(x, a.xs, w_x + (m.R + m.N) * m.E, nullptr, a.cc,
                           px + m.n * (m.R + m.N), m.E, m.N);
      if (x.tp) {
        end_op(x.profile);
        tp_sum(x.tp, px, m.n * (m.R + 2 * m.N), DType::f32, x.st);
        convert_to_bf16_cuda(px, a.dl, m.n * m.R);
        convert_to_bf16_cuda(px + m.n * m.R, a.bc, m.n * m.N);
        convert_to_bf16_cuda(px + m.n * (m.R + m.N), a.cc, m.n * m.N);
        cuda_stream_synchronize(nullptr);  // the conversions ran on the legacy default stream
        begin_op(x.profile, OpFamily::projection);
      }
      linear_forward_cuda(a.dl, W + o.dt_proj_w, nullptr, a.dt, m.n, m.R, m.E, x.st);
      end_op(x.profile);
      begin_op(x.profile, OpFamily::scan);
      selective_scan_forward_cuda(a.xs, a.dt, P + o.dt_proj_b, P + o.a_log, a.bc, a.cc,
                                  P + o.d_skip, a.z, x.doc, a.y, a.sout, a.scan_checkpoint,
                                  {m.B, m.L, m.E, m.N}, x.st);
      end_op(x.profile);
      OpScope projection(x.profile, OpFamily::projection);
      row_parallel_forward(x, a.sout, W + o.out_proj_w, nullptr, out, x.acts.tp_partial, m.E, m.d);
      break;
    }
    case LayerKind::sliding_window:
    case LayerKind::full_attention:
    case LayerKind::cross_attention: {
      const bool cross = kind == LayerKind::cross_attention;
      const bf16* w = W + o.qkv_w;
      const float* b = param_at(P, o.qkv_b);
      begin_op(x.profile, OpFamily::projection);
      linear_forward_cuda(in, w, b, a.q, m.n, m.d, m.Hh, x.st);
      const bf16* k = a.k;
      const bf16* v = a.v;
      if (cross) {
        k = x.acts.layers[c.kv_source_layer].k;
        v = x.acts.layers[c.kv_source_layer].v;
      } else {
        linear_forward_cuda(in, w + m.Hh * m.d, b ? b + m.Hh : b, a.k, m.n, m.d, m.Gh, x.st);
        linear_forward_cuda(in, w + (m.Hh + m.Gh) * m.d, b ? b + m.Hh + m.Gh : b, a.v, m.n, m.d,
                            m.Gh, x.st);
        if (c.rope) {
          rope_forward_cuda(a.q, a.q, m.B, m.L, m.H, m.h, c.rope_theta, x.st);
          rope_forward_cuda(a.k, a.k, m.B, m.L, m.G, m.h, c.rope_theta, x.st);
        }
      }
      end_op(x.profile);
      begin_op(x.profile, OpFamily::attention);
      const float scale = x.attention_scale;
      const int64_t window = window_of(c, kind);
      if (c.differential) {
        diff_attention_forward_cuda(a.q, k, v, x.doc, P + o.lambda_q1, P + o.lambda_k1,
                                    P + o.lambda_q2, P + o.lambda_k2,
                                    static_cast<float>(lambda_init_for_layer(x.layer)),
                                    P + o.head_norm_w, a.o, a.diff,
                                    {m.B, m.L, m.H, m.G, m.h, window}, scale,
                                    static_cast<float>(c.norm_eps), x.st);
      } else {
        attention_forward_cuda(a.q, k, v, x.doc, a.o, a.lse, {m.B, m.L, m.H, m.G, m.h, m.h, window},
                               scale, x.st);
      }
      end_op(x.profile);
      OpScope projection(x.profile, OpFamily::projection);
      // The output bias joins the sum over TP ranks once (rank 0 is 0 without TP).
      const float* o_b = x.tp_rank == 0 ? param_at(P, o.o_b) : nullptr;
      row_parallel_forward(x, a.o, W + o.o_w, o_b, out, x.acts.tp_partial, m.Hh, m.d);
      break;
    }
    case LayerKind::gmu: {
      const bf16* memory = x.acts.layers[c.memory_layer].y;
      begin_op(x.profile, OpFamily::projection);
      linear_forward_cuda(in, W + o.gmu_in_w, nullptr, a.g, m.n, m.d, m.E, x.st);
      end_op(x.profile);
      begin_op(x.profile, OpFamily::gmu);
      gmu_forward_cuda(memory, a.g, param_at(P, o.gmu_norm_w), a.gm, a.gmu_rstd, m.n, m.E,
                       static_cast<float>(c.norm_eps), x.st);
      end_op(x.profile);
      OpScope projection(x.profile, OpFamily::projection);
      row_parallel_forward(x, a.gm, W + o.gmu_out_w, nullptr, out, x.acts.tp_partial, m.E, m.d);
      break;
    }
  }
}

// Mixer backward: dout [n, d] is the gradient of the mixer's output and `in` its input (whole);
// adds into g.da (under TP: the fp32 partial in acts.tp_partial) and the parameter gradients G.
void mixer_backward(const Ctx& x, const GpuLayerActivations& a, const bf16* in, const bf16* dout,
                    float* G, GpuBackwardScratch& g) {
  const ModelConfig& c = x.c;
  const GraphDims& m = x.m;
  const LayerOffsets& o = x.o;
  const float* P = x.P;
  const bf16* W = x.W;
  const cudaStream_t st = x.st;
  const LayerKind kind = c.layers[x.layer];
  switch (kind) {
    case LayerKind::mamba: {
      begin_op(x.profile, OpFamily::projection);
      for (bf16* buf : {g.dxin, g.dz, g.dxs, g.ddt, g.dsout}) zero(buf, m.n * m.E, st);
      zero(g.ddl, m.n * m.R, st), zero(g.dbc, m.n * m.N, st), zero(g.dcc, m.n * m.N, st);
      linear_backward_cuda(dout, a.sout, W + o.out_proj_w, g.dsout, G + o.out_proj_w, nullptr,
                           m.n, m.E, m.d, st);
      end_op(x.profile);
      begin_op(x.profile, OpFamily::scan);
      const bf16* dmemory = x.layer == c.memory_layer ? g.dmemory : nullptr;
      // a.y: the forward's y (kept for every Mamba layer), so the backward need not rebuild it.
      selective_scan_backward_cuda(g.dsout, dmemory, a.xs, a.dt, P + o.dt_proj_b, P + o.a_log,
                                   a.bc, a.cc, P + o.d_skip, a.z, a.y, x.doc, a.scan_checkpoint,
                                   g.dxs, g.ddt, G + o.dt_proj_b, G + o.a_log, g.dbc, g.dcc,
                                   G + o.d_skip, g.dz, g.scan_workspace, {m.B, m.L, m.E, m.N},
                                   st);
      end_op(x.profile);
      begin_op(x.profile, OpFamily::projection);
      if (!x.tp) {
        linear_backward_cuda(g.ddt, a.dl, W + o.dt_proj_w, g.ddl, G + o.dt_proj_w, nullptr, m.n,
                             m.R, m.E, st);
      } else {
        // Each TP rank's channels contribute to the gradients of x_proj's outputs: delta's (a
        // product, its fp32 partial summed) and B's and C's (the scan writes them in bf16: summed
        // as stored).
        float* pd = x.acts.tp_partial;
        gemm_bf16_cuda(false, false, m.n, m.R, m.E, 1.0f, g.ddt, m.E, W + o.dt_proj_w, m.R, 0.0f,
                       pd, m.R, nullptr, st);
        linear_backward_cuda(g.ddt, a.dl, W + o.dt_proj_w, nullptr, G + o.dt_proj_w, nullptr,
                             m.n, m.R, m.E, st);
        end_op(x.profile);
        tp_sum_to_bf16(x.tp, pd, g.ddl, m.n * m.R, st);
        tp_sum(x.tp, g.dbc, m.n * m.N, DType::bf16, st);
        tp_sum(x.tp, g.dcc, m.n * m.N, DType::bf16, st);
        begin_op(x.profile, OpFamily::projection);
      }
      const bf16* w_x = W + o.x_proj_w;
      float* gw_x = G + o.x_proj_w;
      linear_backward_cuda(g.ddl, a.xs, w_x, g.dxs, gw_x, nullptr, m.n, m.E, m.R, st);
      linear_backward_cuda(g.dbc, a.xs, w_x + m.R * m.E, g.dxs, gw_x + m.R * m.E, nullptr, m.n,
                           m.E, m.N, st);
      linear_backward_cuda(g.dcc, a.xs, w_x + (m.R + m.N) * m.E, g.dxs, gw_x + (m.R + m.N) * m.E,
                           nullptr, m.n, m.E, m.N, st);
      end_op(x.profile);
      begin_op(x.profile, OpFamily::conv);
      causal_conv1d_silu_backward_cuda(g.dxs, a.xin, P + o.conv_w, P + o.conv_b, x.doc, g.dxin,
                                       G + o.conv_w, G + o.conv_b, g.conv_workspace, m.B, m.L,
                                       m.E, m.K, st);
      end_op(x.profile);
      OpScope projection(x.profile, OpFamily::projection);
      const bf16* w_in = W + o.in_proj_w;
      region_linear_backward(x, g.dxin, in, w_in, g.da, G + o.in_proj_w, nullptr, m.d, m.E,
                             true);
      region_linear_backward(x, g.dz, in, w_in + m.E * m.d, g.da, G + o.in_proj_w + m.E * m.d,
                             nullptr, m.d, m.E, false);
      break;
    }
    case LayerKind::sliding_window:
    case LayerKind::full_attention:
    case LayerKind::cross_attention: {
      const bool cross = kind == LayerKind::cross_attention;
      const bool kv_source = x.layer == c.kv_source_layer;
      begin_op(x.profile, OpFamily::projection);
      zero(g.dq, m.n * m.Hh, st), zero(g.do_, m.n * m.Hh, st);
      // The output bias's gradient: from every row, or under SP from this rank's rows (the
      // whole-tensor gradients of SP ranks are summed in gpu_reduce_tensor_parallel_grads).
      float* g_ob = param_at(G, o.o_b);
      linear_backward_cuda(dout, a.o, W + o.o_w, g.do_, G + o.o_w, x.sp ? nullptr : g_ob, m.n, m.Hh,
                           m.d, st);
      if (x.sp && g_ob)
        linear_backward_cuda(dout + x.row0 * m.d, nullptr, nullptr, nullptr, nullptr, g_ob, x.nr,
                             m.Hh, m.d, st);
      end_op(x.profile);
      begin_op(x.profile, OpFamily::attention);
      const bf16* k = cross ? x.acts.layers[c.kv_source_layer].k : a.k;
      const bf16* v = cross ? x.acts.layers[c.kv_source_layer].v : a.v;
      bf16* dk = (cross || kv_source) ? g.dk_shared : g.dk;
      bf16* dv = (cross || kv_source) ? g.dv_shared : g.dv;
      if (!cross && !kv_source) zero(g.dk, m.n * m.Gh, st), zero(g.dv, m.n * m.Gh, st);
      bf16* dq_attn = g.dq;
      bf16* dk_attn = dk;
      if (c.rope) {
        zero(g.dq_rot, m.n * m.Hh, st), zero(g.dk_rot, m.n * m.Gh, st);
        dq_attn = g.dq_rot, dk_attn = g.dk_rot;
      }
      const float scale = x.attention_scale;
      const int64_t window = window_of(c, kind);
      if (c.differential) {
        diff_attention_backward_cuda(g.do_, a.q, k, v, x.doc, P + o.lambda_q1, P + o.lambda_k1,
                                     P + o.lambda_q2, P + o.lambda_k2,
                                     static_cast<float>(lambda_init_for_layer(x.layer)),
                                     P + o.head_norm_w, a.diff, dq_attn, dk_attn, dv,
                                     G + o.lambda_q1, G + o.lambda_k1, G + o.lambda_q2,
                                     G + o.lambda_k2, G + o.head_norm_w,
                                     {m.B, m.L, m.H, m.G, m.h, window}, scale, st);
      } else {
        attention_backward_cuda(g.do_, a.q, k, v, x.doc, a.o, a.lse, dq_attn, dk_attn, dv,
                                {m.B, m.L, m.H, m.G, m.h, m.h, window}, scale, st);
      }
      if (c.rope) {
        rope_backward_cuda(g.dq_rot, g.dq, m.B, m.L, m.H, m.h, c.rope_theta, st);
        rope_backward_cuda(g.dk_rot, dk, m.B, m.L, m.G, m.h, c.rope_theta, st);
      }
      end_op(x.profile);
      OpScope projection(x.profile, OpFamily::projection);
      const bf16* w = W + o.qkv_w;
      float* gw = G + o.qkv_w;
      float* gb = param_at(G, o.qkv_b);
      region_linear_backward(x, g.dq, in, w, g.da, gw, gb, m.d, m.Hh, true);
      if (!cross) {
        region_linear_backward(x, dk, in, w + m.Hh * m.d, g.da, gw + m.Hh * m.d,
                               gb ? gb + m.Hh : gb, m.d, m.Gh, false);
        region_linear_backward(x, dv, in, w + (m.Hh + m.Gh) * m.d, g.da,
                               gw + (m.Hh + m.Gh) * m.d, gb ? gb + m.Hh + m.Gh : gb, m.d, m.Gh,
                               false);
      }
      break;
    }
    case LayerKind::gmu: {
      const bf16* memory = x.acts.layers[c.memory_layer].y;
      begin_op(x.profile, OpFamily::projection);
      zero(g.dg, m.n * m.E, st), zero(g.dgm, m.n * m.E, st);
      linear_backward_cuda(dout, a.gm, W + o.gmu_out_w, g.dgm, G + o.gmu_out_w, nullptr, m.n, m.E,
                           m.d, st);
      end_op(x.profile);
      begin_op(x.profile, OpFamily::gmu);
      gmu_backward_cuda(g.dgm, memory, a.g, param_at(P, o.gmu_norm_w), a.gmu_rstd, g.dmemory, g.dg,
                        param_at(G, o.gmu_norm_w), m.n, m.E, st);
      end_op(x.profile);
      OpScope projection(x.profile, OpFamily::projection);
      region_linear_backward(x, g.dg, in, W + o.gmu_in_w, g.da, G + o.gmu_in_w, nullptr, m.d, m.E,
                             true);
      break;
    }
  }
}

// The layer's body after its first norm (done by the caller, fused with the previous residual
// add): the mixer, the residual add fused with the second norm, and the MLP into mlp_out (under
// TP this rank's fp32 partial into acts.tp_partial instead: the caller sums it when it needs the
// output). Under SP x_in, x_mid and the norms cover this rank's nr rows, and each region's input
// is gathered whole.
void layer_body_forward(const Ctx& x, GpuLayerActivations& a, bf16* mixer_out, bf16* mlp_out,
                        float rs) {
  const GraphDims& m = x.m;
  const LayerOffsets& o = x.o;
  mixer_forward(x, a, region_input(x, a.a), mixer_out);
  const bf16* mixed = region_sum(x, mixer_out);  // the mixer region's exit
  begin_op(x.profile, OpFamily::norm);
  norm_residual_forward(x.c, a.x_in, mixed, rs, a.x_mid, x.P + o.norm2_w, param_at(x.P, o.norm2_b),
                        a.a2, a.ln2_mean, a.ln2_rstd, x.nr, x.st);
  end_op(x.profile);
  const bf16* in2 = region_input(x, a.a2);
  OpScope mlp(x.profile, OpFamily::mlp);
  linear_forward_cuda(in2, x.W + o.fc1_w, nullptr, a.h, m.n, m.d, 2 * m.F, x.st);
  swiglu_forward_cuda(a.h, a.s, m.n, m.F, x.st);
  row_parallel_forward(x, a.s, x.W + o.fc2_w, nullptr, mlp_out, x.acts.tp_partial, m.F, m.d);
}

void layer_backward(const Ctx& x, const GpuLayerActivations& a, float* G, GpuBackwardScratch& g,
                    float rs) {
  const GraphDims& m = x.m;
  const LayerOffsets& o = x.o;
  const int64_t nd = m.n * m.d;
  const cudaStream_t st = x.st;
  // Under SP the block outputs' gradients and the regions' inputs are gathered whole (the
  // collectives between the profiled ops), the regions' input gradients reduce-scattered.
  const bf16* in2 = region_input(x, a.a2);
  begin_op(x.profile, OpFamily::mlp);
  const bf16* dout = block_output_grad(x, g.dres, rs, g.dbranch, OpFamily::mlp);
  zero(g.ds, m.n * m.F, st), zero(g.dh, m.n * 2 * m.F, st), zero(g.da, nd, st);
  linear_backward_cuda(dout, a.s, x.W + o.fc2_w, g.ds, G + o.fc2_w, nullptr, m.n, m.F, m.d, st);
  swiglu_backward_cuda(g.ds, a.h, g.dh, m.n, m.F, st);
  region_linear_backward(x, g.dh, in2, x.W + o.fc1_w, g.da, G + o.fc1_w, nullptr, m.d, 2 * m.F,
                         true);
  end_op(x.profile);
  // The MLP region's entry: its input gradient, whole (this rank's rows under SP).
  const bf16* da = region_sum(x, g.da);
  begin_op(x.profile, OpFamily::norm);
  norm_backward(x.c, da, a.x_mid, x.P + o.norm2_w, a.ln2_mean, a.ln2_rstd, g.dres,
                G + o.norm2_w, param_at(G, o.norm2_b), x.nr, st);
  dout = block_output_grad(x, g.dres, rs, g.dbranch, OpFamily::norm);
  zero(g.da, nd, st);
  end_op(x.profile);
  mixer_backward(x, a, region_input(x, a.a), dout, G, g);
  da = region_sum(x, g.da);  // the mixer region's entry: its input gradient, whole
  OpScope norm(x.profile, OpFamily::norm);
  norm_backward(x.c, da, a.x_in, x.P + o.norm1_w, a.ln1_mean, a.ln1_rstd, g.dres,
                G + o.norm1_w, param_at(G, o.norm1_b), x.nr, st);
}

}  // namespace

template <typename T>
GpuModel make_gpu_model(const Model<T>& cpu, cudaStream_t stream, int64_t optimizer_values) {
  check_gpu_split(cpu.config, cpu.split);
  GpuModel m;
  m.config = cpu.config;
  m.full_config = cpu.full_config;
  m.split = cpu.split;
  m.layout = cpu.layout;
  m.residual_scale = cpu.residual_scale;
  m.logit_scale = cpu.logit_scale;
  m.attention_scale = cpu.attention_scale;
  m.stream = stream;
  const int64_t n = cpu.layout.total;
  const int64_t k = optimizer_values < 0 ? n : optimizer_values;
  m.optimizer_values = k;
  m.memory = Arena(Device::cuda, 4 * (2 * n + 2 * k + 64) + 2 * (n + 128),
                   "parameters and optimizer");
  m.params = m.memory.alloc(DType::f32, {n}).ptr<float>();
  m.params_bf16 = m.memory.alloc(DType::bf16, {n}).ptr<bf16>();
  m.grads = m.memory.alloc(DType::f32, {n}).ptr<float>();
  m.adam_m = m.memory.alloc(DType::f32, {k}).ptr<float>();
  m.adam_v = m.memory.alloc(DType::f32, {k}).ptr<float>();
  std::vector<float> host(cpu.params.begin(), cpu.params.end());
  cuda_copy_to_device(m.params, host.data(), sizeof(float) * n);
  cuda_memset_zero(m.grads, sizeof(float) * n);
  for (float* p : {m.adam_m, m.adam_v}) cuda_memset_zero(p, sizeof(float) * k);
  refresh_bf16_params(m);
  return m;
}

void gpu_reduce_tensor_parallel_grads(GpuModel& m) {
  const Communicator* tp = tensor_parallel_group(m.split);
  if (!tp) return;
  // One collective per run of adjacent such tensors (a layer's lambdas and head norm; under SP
  // also the whole tensors, each rank's gradient from its own rows: embedding, norms, biases).
  const bool sp = m.split.sequence_parallel;
  int64_t begin = 0, end = 0;
  auto flush = [&] {
    if (end > begin) tp_sum(tp, m.grads + begin, end - begin, DType::f32, m.stream);
  };
  for (const ParamSpec& p : m.layout.params) {
    if (!(p.tp_partial_grad || (p.tp_dim < 0 && sp))) continue;
    if (p.offset != end) flush(), begin = end = p.offset;
    end += p.numel;
  }
  flush();
}

std::vector<float> download_params(const GpuModel& m) {
  std::vector<float> h(m.layout.total);
  cuda_stream_synchronize(m.stream);
  cuda_copy_to_host(h.data(), m.params, sizeof(float) * h.size());
  return h;
}

std::vector<float> download_grads(const GpuModel& m) {
  std::vector<float> h(m.layout.total);
  cuda_stream_synchronize(m.stream);
  cuda_copy_to_host(h.data(), m.grads, sizeof(float) * h.size());
  return h;
}

void refresh_bf16_params(GpuModel& m) {
  cuda_stream_synchronize(m.stream);
  convert_to_bf16_cuda(m.params, m.params_bf16, m.layout.total);
  cuda_synchronize();
}

GpuActivations plan_gpu_activations(const GpuModel& model, int64_t B, int64_t L,
                                    const RecomputePlan& recompute) {
  const int64_t bytes = planned_gpu_activation_bytes(model, B, L, recompute);
  const bool tp = tensor_parallel_group(model.split) != nullptr;
  GpuActivations acts;
  acts.B = B, acts.L = L, acts.recompute = recompute;
  acts.memory = Arena(Device::cuda, static_cast<size_t>(bytes), "activations");
  allocate_gpu_activations(model.config, B, L, recompute, tp, gpu_row_split(model.split, B * L).nr,
                           acts.memory, acts);
  return acts;
}

int64_t planned_gpu_activation_bytes(const GpuModel& model, int64_t B, int64_t L,
                                     const RecomputePlan& recompute) {
  SAMBAY_CHECK(B > 0 && L > 0, "micro-batch shape must be positive, got B={} L={}", B, L);
  const bool tp = tensor_parallel_group(model.split) != nullptr;
  return gpu_activation_bytes(model.config, B, L, recompute, tp,
                              gpu_row_split(model.split, B * L).nr);
}

void upload_batch(const GpuModel& model, GpuActivations& acts, const int32_t* tokens,
                  const int32_t* targets, const int32_t* doc) {
  const int64_t n = acts.B * acts.L;
  const int64_t V = model.config.vocab;
  for (int64_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= V)
      fail("token {} at position {} of the batch is outside the vocabulary [0, {})", tokens[i], i,
           V);
    if (targets[i] >= V)
      fail("target {} at position {} of the batch is outside the vocabulary [0, {})", targets[i],
           i, V);
  }
  cuda_copy_async(acts.tokens, tokens, sizeof(int32_t) * n, model.stream);
  cuda_copy_async(acts.targets, targets, sizeof(int32_t) * n, model.stream);
  if (doc) cuda_copy_async(acts.doc, doc, sizeof(int32_t) * n, model.stream);
  // The host arrays may be reused by the caller as soon as this returns.
  cuda_stream_synchronize(model.stream);
}

ForwardResult gpu_model_forward(const GpuModel& model, GpuActivations& acts, bool use_doc) {
  const ModelConfig& c = model.config;
  const GraphDims m = graph_dims(c, acts.B, acts.L);
  const cudaStream_t st = model.stream;
  const float rs = static_cast<float>(model.residual_scale);
  const int32_t* doc = use_doc ? acts.doc : nullptr;
  const ParamLayout& lay = model.layout;
  const int n_layers = static_cast<int>(c.layers.size());
  GpuProfile* prof = model.profile;
  // Under SP the embedding, the residual stream, the norms and the loss cover this rank's rows.
  const GpuRows rows = gpu_row_split(model.split, m.n);
  const int64_t nr = rows.nr;
  begin_op(prof, OpFamily::embedding);
  embedding_forward_cuda(acts.tokens + rows.row0, model.params_bf16 + lay.embedding,
                         acts.layers[0].x_in, nr, c.vocab, m.d, st);
  end_op(prof);
  GpuLayerActivations& first = acts.layers[0];
  begin_op(prof, OpFamily::norm);
  norm_forward(c, first.x_in, model.params + lay.layers[0].norm1_w,
               param_at(model.params, lay.layers[0].norm1_b), first.a, first.ln1_mean, first.ln1_rstd,
               nr, st);
  end_op(prof);
  const Communicator* tp = tensor_parallel_group(model.split);
  const int tp_rank = tp ? tp->rank : 0;
  for (int i = 0; i < n_layers; ++i) {
    Ctx x{c, m, i, model.params, model.params_bf16, lay.layers[i], doc, acts, st, prof, tp,
          tp_rank, rows.sp, nr, rows.row0, static_cast<float>(model.attention_scale)};
    GpuLayerActivations& a = acts.layers[i];
    layer_body_forward(x, a, acts.mixer_out, acts.mlp_out, rs);
    const bf16* mlp = region_sum(x, acts.mlp_out);  // the MLP region's exit
    OpScope norm(prof, OpFamily::norm);
    if (i + 1 < n_layers) {
      // The residual add of this layer's MLP fused with the next layer's first norm.
      GpuLayerActivations& next = acts.layers[i + 1];
      const LayerOffsets& no = lay.layers[i + 1];
      norm_residual_forward(c, a.x_mid, mlp, rs, next.x_in, model.params + no.norm1_w,
                            param_at(model.params, no.norm1_b), next.a, next.ln1_mean, next.ln1_rstd,
                            nr, st);
    } else {
      norm_residual_forward(c, a.x_mid, mlp, rs, acts.final_x,
                            model.params + lay.final_norm_w, param_at(model.params, lay.final_norm_b),
                            acts.final_out, acts.final_mean, acts.final_rstd, nr, st);
    }
  }
  ForwardResult r;
  OpScope loss(prof, OpFamily::loss);
  const int64_t head = output_head_offset(lay);  // the embedding when tied
  r.loss_sum = tied_cross_entropy_forward_cuda(
      acts.final_out, model.params_bf16 + head, acts.targets + rows.row0, acts.ce_lse,
      acts.loss, static_cast<float>(model.logit_scale), acts.loss_workspace, &r.valid_rows, st);
  if (rows.sp) {  // each SP rank scored its own rows: the sums over the group, through the device
    double sums[2] = {r.loss_sum, static_cast<double>(r.valid_rows)};
    cuda_copy_to_device(acts.tp_scalars, sums, sizeof(sums));
    cuda_stream_synchronize(nullptr);
    all_reduce(*tp, acts.tp_scalars, acts.tp_scalars, 2, DType::f64, ReduceOp::sum);
    wait(*tp);
    cuda_copy_to_host(sums, acts.tp_scalars, sizeof(sums));
    r.loss_sum = sums[0], r.valid_rows = static_cast<int64_t>(sums[1]);
  }
  return r;
}

namespace {
// The flat offset of layer i's first parameter (its first norm's weight).
int64_t layer_first_param(const ParamLayout& lay, int i) { return lay.layers[i].norm1_w; }
}  // namespace

void gpu_model_backward(GpuModel& model, GpuActivations& acts, bool use_doc, float grad_scale,
                        const GradsReady& grads_ready) {
  const ModelConfig& c = model.config;
  const GraphDims m = graph_dims(c, acts.B, acts.L);
  const cudaStream_t st = model.stream;
  const float rs = static_cast<float>(model.residual_scale);
  const int32_t* doc = use_doc ? acts.doc : nullptr;
  const ParamLayout& lay = model.layout;
  float* G = model.grads;
  GpuBackwardScratch& g = acts.grad;
  const int n_layers = static_cast<int>(c.layers.size());

  if (g.dk_shared) zero(g.dk_shared, m.n * m.Gh, st), zero(g.dv_shared, m.n * m.Gh, st);
  if (g.dmemory) zero(g.dmemory, m.n * m.E, st);
  GpuProfile* prof = model.profile;
  // Under SP the loss, the final norm, the residual stream and the embedding cover this rank's
  // rows (their whole-tensor gradients are summed over TP in gpu_reduce_tensor_parallel_grads).
  const GpuRows rows = gpu_row_split(model.split, m.n);
  const int64_t nr = rows.nr;
  begin_op(prof, OpFamily::loss);
  zero(g.da, nr * m.d, st), zero(g.dres, nr * m.d, st);
  const int64_t head = output_head_offset(lay);  // the embedding when tied
  tied_cross_entropy_backward_cuda(acts.final_out, model.params_bf16 + head,
                                   acts.targets + rows.row0, acts.ce_lse, g.da, G + head,
                                   acts.loss, static_cast<float>(model.logit_scale), grad_scale,
                                   acts.loss_workspace, st);
  end_op(prof);
  begin_op(prof, OpFamily::norm);
  norm_backward(c, g.da, acts.final_x, model.params + lay.final_norm_w, acts.final_mean,
                acts.final_rstd, g.dres, G + lay.final_norm_w, param_at(G, lay.final_norm_b), nr,
                st);
  end_op(prof);
  const Communicator* tp = tensor_parallel_group(model.split);
  const int tp_rank = tp ? tp->rank : 0;
  for (int i = n_layers - 1; i >= 0; --i) {
    Ctx x{c, m, i, model.params, model.params_bf16, lay.layers[i], doc, acts, st, prof, tp,
          tp_rank, rows.sp, nr, rows.row0, static_cast<float>(model.attention_scale)};
    GpuLayerActivations& a = acts.layers[i];
    if (acts.recompute.layers[i]) {
      // Re-run the layer from its saved input with the same kernels as the forward (the first
      // norm unfused: it computes the same statistics from the same stored input).
      begin_op(prof, OpFamily::norm);
      norm_forward(c, a.x_in, model.params + x.o.norm1_w, param_at(model.params, x.o.norm1_b), a.a,
                   a.ln1_mean, a.ln1_rstd, nr, st);
      end_op(prof);
      layer_body_forward(x, a, acts.mixer_out, acts.mlp_out, rs);
    }
    layer_backward(x, a, G, g, rs);
    if (grads_ready) grads_ready(layer_first_param(lay, i));
  }
  {
    OpScope embedding(prof, OpFamily::embedding);
    embedding_backward_cuda(acts.tokens + rows.row0, g.dres, G + lay.embedding, nr, c.vocab, m.d,
                            st);
  }
  if (grads_ready) grads_ready(0);
}

template GpuModel make_gpu_model<float>(const Model<float>&, cudaStream_t, int64_t);
template GpuModel make_gpu_model<double>(const Model<double>&, cudaStream_t, int64_t);

}  // namespace sambay
