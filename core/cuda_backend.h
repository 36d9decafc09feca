// The model graph's ops on one GPU (core/graph.h): bf16 activations with fp32 statistics and
// accumulation, matrices read from the bf16 compute copy and vector-like parameters (norms,
// biases, A_log, D, lambda, conv) from the fp32 master, gradients in fp32, every kernel on the
// model's stream. Its fused ops: the residual add with the norm after it, the conv with its SiLU
// (the conv's output is recomputed in backward), the nGMU's gate with its norm, the scan with
// chunk checkpoints, and the loss over bf16 logits kept per vocabulary chunk.
//
// Tensor parallelism: a row-parallel product's partial sum is made in fp32 (acts.tp_partial),
// summed over the group in fp32 and rounded to bf16 once, as the single-rank GEMM rounds its
// fp32 accumulation once; so is a region's input gradient, which the column-parallel backward
// products add into. TP then differs from one rank by the order of fp32 additions (and where one
// rank rounds between the products that add into one input gradient, TP does not), at twice the
// bytes of a bf16 reduction. The gradients of Mamba's B and C, which the scan writes in bf16,
// are summed as stored. Collectives synchronise the stream before they read a buffer and return
// with the sum in place for the stream's later work (NCCL: wait(); host-staged MPI: blocking
// copies); they are kept out of the profiled op families. Context parallelism is not run here
// yet (context_parallel is false: make_gpu_model refuses a CP group).
#pragma once

#include "core/cuda_runtime.h"
#include "core/gpu_model.h"
#include "core/graph.h"
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

#include <initializer_list>
#include <utility>

namespace sambay {

struct CudaBackend {
  using Act = bf16;
  using Stat = float;
  using Param = float;
  using Weight = bf16;
  using Grad = float;
  static constexpr bool context_parallel = false;

  const ModelConfig& c;
  GraphDims m;
  const ParamLayout& lay;
  GpuActivations& acts;
  const float* P;  // fp32 master
  const bf16* W;   // bf16 compute copy
  float* G;
  RowSplit rows;
  const int32_t* doc;  // device [B, L], or null
  cudaStream_t st;
  GpuProfile* profile;
  float residual_scale, attention_scale, logit_scale;

  CudaBackend(const GpuModel& model, GpuActivations& a, float* grads, bool use_doc)
      : c(model.config),
        m(graph_dims(model.config, a.B, a.L)),
        lay(model.layout),
        acts(a),
        P(model.params),
        W(model.params_bf16),
        G(grads),
        rows(row_split(model.split.tp, model.split.sequence_parallel, m.n)),
        doc(use_doc ? a.doc : nullptr),
        st(model.stream),
        profile(model.profile),
        residual_scale(static_cast<float>(model.residual_scale)),
        attention_scale(static_cast<float>(model.attention_scale)),
        logit_scale(static_cast<float>(model.logit_scale)) {}

  // The op family open now: a collective inside it ends it and opens it again after.
  void begin(OpFamily f) { family_ = f, begin_op(profile, f); }
  void end() { end_op(profile); }

  template <typename E>
  void zero(E* p, int64_t count) {
    cuda_memset_zero_async(p, sizeof(E) * count, st);
  }

  // ---- Tensor- and sequence-parallel hooks (core/graph.h).

  const bf16* region_enter(const bf16* normed) {
    if (!rows.sp) return normed;
    cuda_stream_synchronize(st);
    all_gather(*rows.tp, normed, acts.region_in, rows.nr * m.d, DType::bf16);
    wait(*rows.tp);
    return acts.region_in;
  }
  // The fp32 partial sums in acts.tp_partial, summed over the group and rounded into out; under
  // SP reduce-scattered instead, this rank's nr rows of the total rounded once into out's first
  // nr rows. Returns out (the rows of the residual stream this rank keeps).
  bf16* region_exit(bf16* out) {
    if (!rows.tp) return out;
    if (!rows.sp) {
      tp_sum_to_bf16(acts.tp_partial, out, m.n * m.d);
      return out;
    }
    float* mine = acts.tp_partial + rows.row0 * m.d;
    cuda_stream_synchronize(st);
    reduce_scatter(*rows.tp, acts.tp_partial, mine, rows.nr * m.d, DType::f32, ReduceOp::sum);
    wait(*rows.tp);
    convert_to_bf16_cuda(mine, out, rows.nr * m.d);
    cuda_stream_synchronize(nullptr);  // the conversion ran on the legacy default stream
    return out;
  }
  bf16* region_enter_backward(bf16* da) { return region_exit(da); }
  const bf16* region_exit_backward(const bf16* dres, bf16* dbranch) {
    bf16* mine = dbranch + rows.row0 * m.d;
    scale_forward_cuda(dres, residual_scale, mine, rows.nr * m.d, st);
    if (rows.sp) {
      end_op(profile);
      cuda_stream_synchronize(st);
      all_gather(*rows.tp, mine, dbranch, rows.nr * m.d, DType::bf16);
      wait(*rows.tp);
      begin_op(profile, family_);
    }
    return dbranch;
  }

  // ---- Linear layers, y [n, out] = x [n, k] W^T (+ b); backward adds into dx, dw, db.

  void linear_forward(const bf16* x, const bf16* w, const float* b, bf16* y, int64_t k,
                      int64_t out) {
    linear_forward_cuda(x, w, b, y, m.n, k, out, st);
  }
  // Into y on one rank; under TP this rank's fp32 partial into acts.tp_partial instead.
  void row_parallel_linear_forward(const bf16* x, const bf16* w, const float* b, bf16* y,
                                   int64_t k, int64_t out) {
    row_parallel(x, w, b, y, acts.tp_partial, k, out);
  }
  // Consecutive row blocks of w; under TP their fp32 partials side by side in acts.tp_partial,
  // summed in one collective and each rounded once into its output.
  void linear_forward_tp_sum(const bf16* x, const bf16* w, int64_t k,
                             std::initializer_list<std::pair<bf16*, int64_t>> outputs) {
    float* partial = acts.tp_partial;
    int64_t width = 0;
    for (const auto& [y, out] : outputs) {
      row_parallel(x, w + width * k, nullptr, y, partial ? partial + m.n * width : nullptr, k,
                   out);
      width += out;
    }
    if (!rows.tp) return;
    end_op(profile);
    tp_sum(partial, m.n * width, DType::f32);
    int64_t at = 0;
    for (const auto& [y, out] : outputs) {
      convert_to_bf16_cuda(partial + m.n * at, y, m.n * out);
      at += out;
    }
    cuda_stream_synchronize(nullptr);  // the conversions ran on the legacy default stream
    begin_op(profile, family_);
  }
  void linear_backward(const bf16* dy, const bf16* x, const bf16* w, bf16* dx, float* dw,
                       float* db, int64_t k, int64_t out) {
    linear_backward_cuda(dy, x, w, dx, dw, db, m.n, k, out, st);
  }
  // The input gradient added into dx (bf16) on one rank; under TP into the region's fp32 partial
  // in acts.tp_partial instead (written by the region's first product, added by the others),
  // which region_enter_backward sums.
  void column_parallel_linear_backward(const bf16* dy, const bf16* x, const bf16* w, bf16* dx,
                                       float* dw, float* db, int64_t k, int64_t out, bool first) {
    if (!rows.tp) {
      linear_backward_cuda(dy, x, w, dx, dw, db, m.n, k, out, st);
      return;
    }
    gemm_bf16_cuda(false, false, m.n, k, out, 1.0f, dy, out, w, k, first ? 0.0f : 1.0f,
                   acts.tp_partial, k, nullptr, st);
    linear_backward_cuda(dy, x, w, nullptr, dw, db, m.n, k, out, st);
  }
  // dx (made here: its fp32 partial summed and rounded once) and the bf16 gradients in `also`
  // (summed as stored), over the TP group.
  void linear_backward_tp_sum(const bf16* dy, const bf16* x, const bf16* w, bf16* dx, float* dw,
                              int64_t k, int64_t out,
                              std::initializer_list<std::pair<bf16*, int64_t>> also) {
    if (!rows.tp) {
      linear_backward_cuda(dy, x, w, dx, dw, nullptr, m.n, k, out, st);
      return;
    }
    float* partial = acts.tp_partial;
    gemm_bf16_cuda(false, false, m.n, k, out, 1.0f, dy, out, w, k, 0.0f, partial, k, nullptr, st);
    linear_backward_cuda(dy, x, w, nullptr, dw, nullptr, m.n, k, out, st);
    end_op(profile);
    tp_sum_to_bf16(partial, dx, m.n * k);
    for (const auto& [buf, width] : also) tp_sum(buf, m.n * width, DType::bf16);
    begin_op(profile, family_);
  }
  // The bias gradient of a linear layer [rows, k] -> [rows, cols] from its output gradient.
  void bias_backward(const bf16* dy, float* db, int64_t rows_, int64_t k, int64_t cols) {
    linear_backward_cuda(dy, nullptr, nullptr, nullptr, nullptr, db, rows_, k, cols, st);
  }

  // ---- Norms over rows of width d of the residual stream (this rank's rows).

  void norm_forward(const bf16* x, const float* w, const float* b, bf16* y, float* mean,
                    float* rstd) {
    const float eps = static_cast<float>(c.norm_eps);
    if (c.norm == NormKind::layernorm)
      layernorm_forward_cuda(x, w, b, y, mean, rstd, rows.nr, c.d_model, eps, st);
    else
      rmsnorm_forward_cuda(x, w, y, rstd, rows.nr, c.d_model, eps, st);
  }
  // x_out = x + residual_scale * delta, y = norm(x_out), in one pass.
  void residual_norm_forward(const bf16* x, const bf16* delta, bf16* x_out, const float* w,
                             const float* b, bf16* y, float* mean, float* rstd) {
    const float eps = static_cast<float>(c.norm_eps);
    if (c.norm == NormKind::layernorm)
      layernorm_residual_forward_cuda(x, delta, residual_scale, x_out, w, b, y, mean, rstd,
                                      rows.nr, c.d_model, eps, st);
    else
      rmsnorm_residual_forward_cuda(x, delta, residual_scale, x_out, w, y, rstd, rows.nr,
                                    c.d_model, eps, st);
  }
  void norm_backward(const bf16* dy, const bf16* x, const float* w, const float* mean,
                     const float* rstd, bf16* dx, float* dw, float* db) {
    if (c.norm == NormKind::layernorm)
      layernorm_backward_cuda(dy, x, w, mean, rstd, dx, dw, db, rows.nr, c.d_model, st);
    else
      rmsnorm_backward_cuda(dy, x, w, rstd, dx, dw, rows.nr, c.d_model, st);
  }

  // ---- Embedding and the tied-head loss over this rank's rows of the uploaded micro-batch.

  void embedding_forward(const bf16* table, bf16* out) {
    embedding_forward_cuda(acts.tokens + rows.row0, table, out, rows.nr, c.vocab, m.d, st);
  }
  void embedding_backward(const bf16* dout, float* dtable) {
    embedding_backward_cuda(acts.tokens + rows.row0, dout, dtable, rows.nr, c.vocab, m.d, st);
  }
  // Synchronises to return the loss. Under SP each rank scores its rows: the sums over the
  // group, through the device.
  ForwardResult loss_forward(const bf16* head) {
    ForwardResult r;
    r.loss_sum = tied_cross_entropy_forward_cuda(acts.final_out, head, acts.targets + rows.row0,
                                                 acts.ce_lse, acts.loss, logit_scale,
                                                 acts.loss_workspace, &r.valid_rows, st);
    if (rows.sp) {
      double sums[2] = {r.loss_sum, static_cast<double>(r.valid_rows)};
      cuda_copy_to_device(acts.tp_scalars, sums, sizeof(sums));
      cuda_stream_synchronize(nullptr);
      all_reduce(*rows.tp, acts.tp_scalars, acts.tp_scalars, 2, DType::f64, ReduceOp::sum);
      wait(*rows.tp);
      cuda_copy_to_host(sums, acts.tp_scalars, sizeof(sums));
      r.loss_sum = sums[0], r.valid_rows = static_cast<int64_t>(sums[1]);
    }
    return r;
  }
  void loss_backward(const bf16* head, bf16* dh, float* dhead, double grad_scale) {
    tied_cross_entropy_backward_cuda(acts.final_out, head, acts.targets + rows.row0, acts.ce_lse,
                                     dh, dhead, acts.loss, logit_scale,
                                     static_cast<float>(grad_scale), acts.loss_workspace, st);
  }

  // ---- Elementwise.

  void swiglu_forward(const bf16* h, bf16* s) { swiglu_forward_cuda(h, s, m.n, m.F, st); }
  void swiglu_backward(const bf16* ds, const bf16* h, bf16* dh) {
    swiglu_backward_cuda(ds, h, dh, m.n, m.F, st);
  }

  // ---- Mamba: the conv with its SiLU (xin -> xs), the scan with its chunk checkpoints. No
  // halo and no carried state here (context_parallel is false: the graph passes none).

  void conv_silu_forward(GpuLayerActivations& a, const bf16* /*halo*/, const float* w,
                         const float* b) {
    causal_conv1d_silu_forward_cuda(a.xin, w, b, doc, a.xs, m.B, m.L, m.E, m.K, st);
  }
  void conv_silu_backward(const bf16* dxs, const GpuLayerActivations& a, const bf16* /*halo*/,
                          const float* w, const float* b, bf16* dxin, float* dw, float* db) {
    causal_conv1d_silu_backward_cuda(dxs, a.xin, w, b, doc, dxin, dw, db,
                                     acts.grad.conv_workspace, m.B, m.L, m.E, m.K, st);
  }
  void scan_forward(GpuLayerActivations& a, const float* dt_bias, const float* A_log,
                    const float* D, const ScanCarry<float>& carry) {
    selective_scan_forward_cuda(a.xs, a.dt, dt_bias, A_log, a.bc, a.cc, D, a.z, doc, a.y, a.sout,
                                a.scan_checkpoint, scan_shape(), st, carry);
  }
  // a.y: the forward's y (kept for every Mamba layer), so the backward need not rebuild it.
  void scan_backward(const bf16* dsout, const bf16* dmemory, const GpuLayerActivations& a,
                     const float* dt_bias, const float* A_log, const float* D,
                     const graph::ScanGrads<bf16, float>& g, const ScanCarry<float>& carry) {
    selective_scan_backward_cuda(dsout, dmemory, a.xs, a.dt, dt_bias, A_log, a.bc, a.cc, D, a.z,
                                 a.y, doc, a.scan_checkpoint, g.dx, g.ddt, g.ddt_bias, g.dA_log,
                                 g.dB, g.dC, g.dD, g.dz, acts.grad.scan_workspace, scan_shape(),
                                 st, carry);
  }

  // ---- Attention, plain and differential (the layer's lambdas and head norm by its index).

  void attention_forward(const bf16* q, const bf16* k, const bf16* v, const int32_t* d, bf16* out,
                         float* lse, const AttentionShape& s) {
    attention_forward_cuda(q, k, v, d, out, lse, s, attention_scale, st);
  }
  void attention_backward(const bf16* dout, const bf16* q, const bf16* k, const bf16* v,
                          const int32_t* d, const bf16* out, const float* lse, bf16* dq, bf16* dk,
                          bf16* dv, const AttentionShape& s) {
    attention_backward_cuda(dout, q, k, v, d, out, lse, dq, dk, dv, s, attention_scale, st);
  }
  void diff_attention_forward(const bf16* q, const bf16* k, const bf16* v, const int32_t* d,
                              int layer, bf16* out, const DiffAttentionSaved& saved,
                              const DiffAttentionShape& s) {
    const LayerOffsets& o = lay.layers[layer];
    diff_attention_forward_cuda(q, k, v, d, P + o.lambda_q1, P + o.lambda_k1, P + o.lambda_q2,
                                P + o.lambda_k2, static_cast<float>(lambda_init_for_layer(layer)),
                                P + o.head_norm_w, out, saved, s, attention_scale,
                                static_cast<float>(c.norm_eps), st);
  }
  void diff_attention_backward(const bf16* dout, const bf16* q, const bf16* k, const bf16* v,
                               const int32_t* d, int layer, const DiffAttentionSaved& saved,
                               bf16* dq, bf16* dk, bf16* dv, const DiffAttentionShape& s) {
    const LayerOffsets& o = lay.layers[layer];
    diff_attention_backward_cuda(dout, q, k, v, d, P + o.lambda_q1, P + o.lambda_k1,
                                 P + o.lambda_q2, P + o.lambda_k2,
                                 static_cast<float>(lambda_init_for_layer(layer)),
                                 P + o.head_norm_w, saved, dq, dk, dv, G + o.lambda_q1,
                                 G + o.lambda_k1, G + o.lambda_q2, G + o.lambda_k2,
                                 G + o.head_norm_w, s, attention_scale, st);
  }
  // In place on x [rows, L, heads, h]; the queries start at position 0 (no CP here).
  void rope_forward(bf16* x, int64_t rows_, int64_t heads, int64_t /*position*/) {
    rope_forward_cuda(x, x, rows_, m.L, heads, m.h, c.rope_theta, st);
  }
  void rope_backward(const bf16* dy, bf16* dx, int64_t rows_, int64_t heads,
                     int64_t /*position*/) {
    rope_backward_cuda(dy, dx, rows_, m.L, heads, m.h, c.rope_theta, st);
  }

  // ---- GMU: the gate, with the nGMU's norm fused (norm_w non-null).

  void gmu_forward(const bf16* memory, GpuLayerActivations& a, const float* norm_w) {
    gmu_forward_cuda(memory, a.g, norm_w, a.gm, a.gmu_rstd, m.n, m.E,
                     static_cast<float>(c.norm_eps), st);
  }
  void gmu_backward(const bf16* dgm, const bf16* memory, const GpuLayerActivations& a,
                    const float* norm_w, bf16* dmemory, bf16* dg, float* dnorm_w) {
    gmu_backward_cuda(dgm, memory, a.g, norm_w, a.gmu_rstd, dmemory, dg, dnorm_w, m.n, m.E, st);
  }

 private:
  OpFamily family_ = OpFamily::projection;

  SelectiveScanShape scan_shape() const { return {m.B, m.L, m.E, m.N}; }
  // y = x W^T (+ bias) into y (bf16) on one rank; under TP the fp32 partial into `partial`.
  void row_parallel(const bf16* x, const bf16* w, const float* b, bf16* y, float* partial,
                    int64_t k, int64_t out) {
    if (!rows.tp)
      linear_forward_cuda(x, w, b, y, m.n, k, out, st);
    else
      gemm_bf16_cuda(false, true, m.n, out, k, 1.0f, x, k, w, k, 0.0f, partial, out, b, st);
  }
  // Sums count values of buf (device memory written on st) over the TP group, in place: st is
  // synchronised first (the MPI backends stage through the host with copies outside st, NCCL
  // runs on its own stream) and on return the sum is in place (NCCL is waited for).
  void tp_sum(void* buf, int64_t count, DType type) {
    cuda_stream_synchronize(st);
    all_reduce(*rows.tp, buf, buf, count, type, ReduceOp::sum);
    wait(*rows.tp);
  }
  // Sums fp32 partials over the TP group and writes the total, rounded once to bf16, to out (the
  // rounding the single-rank GEMM does when it writes its bf16 output). The conversion runs on
  // the legacy default stream, synchronised before st's later work.
  void tp_sum_to_bf16(float* partial, bf16* out, int64_t count) {
    tp_sum(partial, count, DType::f32);
    convert_to_bf16_cuda(partial, out, count);
    cuda_stream_synchronize(nullptr);
  }
};

}  // namespace sambay
