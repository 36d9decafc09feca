// The model graph's ops on the CPU (core/graph.h): the kernels' CPU references in T = float or
// double (double: the fp64 reference every other backend and layout is tested against), on
// host buffers, with the parallel hooks on host collectives (parallel/communicator.h,
// parallel/context_parallel.h). Tensor-parallel partial sums are summed in T, in place.
#pragma once

#include "core/graph.h"
#include "core/model.h"
#include "kernels/activations.h"
#include "kernels/attention.h"
#include "kernels/causal_conv1d.h"
#include "kernels/column_sum.h"
#include "kernels/cross_entropy.h"
#include "kernels/diff_attention.h"
#include "kernels/embedding.h"
#include "kernels/gmu.h"
#include "kernels/layernorm.h"
#include "kernels/linear.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/selective_scan.h"
#include "parallel/context_parallel.h"

#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <utility>

namespace sambay {

template <typename T>
struct CpuBackend {
  using Act = T;
  using Stat = T;
  using Param = T;
  using Weight = T;
  using Grad = T;

  static constexpr bool context_parallel = true;
  // Vocabulary rows per GEMM in the loss: the [n, chunk] logits block is the loss's only buffer.
  static constexpr int64_t kLossVocabChunk = 4096;

  const ModelConfig& c;
  GraphDims m;
  const ParamLayout& lay;
  Activations<T>& acts;
  const T* P;  // parameters (vectors and matrices alike)
  const T* W;
  T* G;        // gradients (null in a forward)
  RowSplit rows;
  const Communicator* cp;  // the CP group when it has several ranks; null: whole sequences
  const int32_t* doc;      // [B, L] document ids, or null
  const int32_t* tokens;   // [B, L]
  const int32_t* targets;  // [B, L]
  T residual_scale, attention_scale, logit_scale;
  LogitRounding logit_rounding;
  int64_t E_full;  // the inner width over all TP ranks (the nGMU's norm spans it)

  CpuBackend(const Model<T>& model, Activations<T>& a, T* grads, const int32_t* tok,
             const int32_t* tgt, const int32_t* d)
      : c(model.config),
        m(local_dims(model.config, a.B, a.L, model.split.cp ? model.split.cp->size : 1)),
        lay(model.layout),
        acts(a),
        P(model.params.data()),
        W(model.params.data()),
        G(grads),
        rows(row_split(model.split.tp, model.split.sequence_parallel, m.n)),
        cp(model.split.cp && model.split.cp->size > 1 ? model.split.cp : nullptr),
        doc(d),
        tokens(tok),
        targets(tgt),
        residual_scale(static_cast<T>(model.residual_scale)),
        attention_scale(static_cast<T>(model.attention_scale)),
        logit_scale(static_cast<T>(model.logit_scale)),
        logit_rounding(model.logit_rounding),
        E_full(model.full_config.d_inner) {}

  // Op families are timed on the GPU only.
  void begin(OpFamily) {}
  void end() {}

  template <typename E>
  void zero(E* p, int64_t count) {
    std::memset(p, 0, sizeof(E) * static_cast<size_t>(count));
  }

  // ---- Tensor- and sequence-parallel hooks (core/graph.h).

  // Sums a partial result over the TP group in place.
  void tp_sum(T* data, int64_t count) {
    if (rows.tp) all_reduce(*rows.tp, data, count);
  }
  const T* region_enter(const T* normed) {
    if (!rows.sp) return normed;
    all_gather(*rows.tp, normed, acts.region_in, rows.nr * m.d, dtype_of<T>());
    return acts.region_in;
  }
  // out [n, d] holds this rank's partial sum; returns this rank's rows of the total (reduce-
  // scattered under SP, all-reduced otherwise), in place in out.
  T* region_exit(T* out) {
    if (!rows.tp) return out;
    if (!rows.sp) {
      all_reduce(*rows.tp, out, m.n * m.d);
      return out;
    }
    T* mine = out + rows.row0 * m.d;
    reduce_scatter(*rows.tp, out, mine, rows.nr * m.d, dtype_of<T>(), ReduceOp::sum);
    return mine;
  }
  T* region_enter_backward(T* da) { return region_exit(da); }
  const T* region_exit_backward(const T* dres, T* dbranch) {
    T* mine = dbranch + rows.row0 * m.d;
    for (int64_t i = 0; i < rows.nr * m.d; ++i) mine[i] = residual_scale * dres[i];
    if (rows.sp) all_gather(*rows.tp, mine, dbranch, rows.nr * m.d, dtype_of<T>());
    return dbranch;
  }

  // ---- Context-parallel hooks.

  // The document ids of the whole samples, and those of the conv's input (for each run, the
  // K - 1 positions before its chunk, then the chunk). Before position 0 the conv input is zero,
  // so the ids given there do not matter.
  void cp_gather_documents() {
    acts.doc_whole.clear(), acts.conv_doc.clear();
    if (!doc) return;
    const int64_t Lw = 2 * cp->size * m.L, h = m.K - 1;
    acts.doc_whole.resize(m.B / 2 * Lw);
    gather_sequence(*cp, doc, acts.doc_whole.data(), m.B / 2, m.L, 1);
    for (int64_t p = 0; p < m.B; ++p) {
      const int64_t first = chunk_of(cp->rank, int(p % 2), cp->size) * m.L;
      for (int64_t j = 0; j < h + m.L; ++j)
        acts.conv_doc.push_back(acts.doc_whole[p / 2 * Lw + std::max<int64_t>(0, first - h + j)]);
    }
  }
  void cp_gather_sequence(const T* local, T* whole, int64_t width) {
    gather_sequence(*cp, local, whole, m.B / 2, m.L, width);
  }
  void cp_reduce_scatter_sequence(const T* whole, T* local, int64_t width) {
    reduce_scatter_sequence_add(*cp, whole, local, m.B / 2, m.L, width);
  }
  // The K - 1 positions of the chunk before each run, into acts.conv_halo.
  const T* cp_conv_halo(const T* xin) {
    previous_halo(*cp, xin, acts.conv_halo, m.B / 2, m.L, m.E, m.K - 1);
    return acts.conv_halo;
  }
  // Adds the halo's gradient (acts.conv_halo, from conv_silu_backward) into the dxin of the chunk
  // it came from.
  void cp_return_conv_halo_grad(T* dxin) {
    return_halo_grad(*cp, acts.conv_halo, dxin, m.B / 2, m.L, m.E, m.K - 1);
  }
  void cp_carry_scan_state(const T* state_out, const T* decay, T* state_in) {
    carry_scan_state(*cp, state_out, decay, doc_whole(), state_in, m.B / 2, m.L, m.E * m.N);
  }
  void cp_carry_scan_grad(const T* dstate_in, const T* decay, T* dstate_out) {
    carry_scan_grad(*cp, dstate_in, decay, doc_whole(), dstate_out, m.B / 2, m.L, m.E * m.N);
  }

  // ---- Linear layers, y [n, out] = x [n, k] W^T (+ b); backward adds into dx, dw, db.

  void linear_forward(const T* x, const T* w, const T* b, T* y, int64_t k, int64_t out) {
    sambay::linear_forward(x, w, b, y, m.n, k, out);
  }
  // This rank's partial sum into y (region_exit sums it).
  void row_parallel_linear_forward(const T* x, const T* w, const T* b, T* y, int64_t k,
                                   int64_t out) {
    linear_forward(x, w, b, y, k, out);
  }
  // Consecutive row blocks of w, each output summed over TP at once.
  void linear_forward_tp_sum(const T* x, const T* w, int64_t k,
                             std::initializer_list<std::pair<T*, int64_t>> outputs) {
    const T* wj = w;
    for (const auto& [y, out] : outputs) linear_forward(x, wj, nullptr, y, k, out), wj += out * k;
    for (const auto& [y, out] : outputs) tp_sum(y, m.n * out);
  }
  void linear_backward(const T* dy, const T* x, const T* w, T* dx, T* dw, T* db, int64_t k,
                       int64_t out) {
    sambay::linear_backward(dy, x, w, dx, dw, db, m.n, k, out);
  }
  // dx: the region's input gradient (region_enter_backward sums it over TP).
  void column_parallel_linear_backward(const T* dy, const T* x, const T* w, T* dx, T* dw, T* db,
                                       int64_t k, int64_t out, bool /*first*/) {
    linear_backward(dy, x, w, dx, dw, db, k, out);
  }
  // dx and the gradients in `also`, summed over TP.
  void linear_backward_tp_sum(const T* dy, const T* x, const T* w, T* dx, T* dw, int64_t k,
                              int64_t out, std::initializer_list<std::pair<T*, int64_t>> also) {
    linear_backward(dy, x, w, dx, dw, nullptr, k, out);
    tp_sum(dx, m.n * k);
    for (const auto& [buf, width] : also) tp_sum(buf, m.n * width);
  }
  // The bias gradient of a linear layer [rows, k] -> [rows, cols]: db += the column sums of dy.
  void bias_backward(const T* dy, T* db, int64_t rows_, int64_t /*k*/, int64_t cols) {
    add_column_sums(db, rows_, cols,
                    [&](int64_t r, int64_t j) { return static_cast<double>(dy[r * cols + j]); });
  }

  // ---- Norms over rows of width d of the residual stream (this rank's rows).

  void norm_forward(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd) {
    const T eps = static_cast<T>(c.norm_eps);
    if (c.norm == NormKind::layernorm)
      layernorm_forward(x, w, b, y, mean, rstd, rows.nr, c.d_model, eps);
    else
      rmsnorm_forward(x, w, y, rstd, rows.nr, c.d_model, eps);
  }
  // x_out = x + residual_scale * delta, then y = norm(x_out).
  void residual_norm_forward(const T* x, const T* delta, T* x_out, const T* w, const T* b, T* y,
                             T* mean, T* rstd) {
    const T rs = residual_scale;
    for (int64_t i = 0; i < rows.nr * m.d; ++i) x_out[i] = x[i] + rs * delta[i];
    norm_forward(x_out, w, b, y, mean, rstd);
  }
  void norm_backward(const T* dy, const T* x, const T* w, const T* mean, const T* rstd, T* dx,
                     T* dw, T* db) {
    if (c.norm == NormKind::layernorm)
      layernorm_backward(dy, x, w, mean, rstd, dx, dw, db, rows.nr, c.d_model);
    else
      rmsnorm_backward(dy, x, w, rstd, dx, dw, rows.nr, c.d_model);
  }

  // ---- Embedding and the tied-head loss over this rank's rows.

  void embedding_forward(const T* table, T* out) {
    sambay::embedding_forward(tokens + rows.row0, table, out, rows.nr, c.vocab, m.d);
  }
  void embedding_backward(const T* dout, T* dtable) {
    sambay::embedding_backward(tokens + rows.row0, dout, dtable, rows.nr, c.vocab, m.d);
  }
  ForwardResult loss_forward(const T* head) {
    ForwardResult r;
    r.loss_sum = tied_cross_entropy_forward(acts.final_out, head, targets + rows.row0, acts.ce_lse,
                                            rows.nr, m.d, c.vocab, logit_scale,
                                            std::min<int64_t>(kLossVocabChunk, c.vocab),
                                            &r.valid_rows, logit_rounding);
    if (rows.sp) {  // each SP rank scored its own rows
      double sums[2] = {r.loss_sum, static_cast<double>(r.valid_rows)};
      all_reduce(*rows.tp, sums, 2);
      r.loss_sum = sums[0], r.valid_rows = static_cast<int64_t>(sums[1]);
    }
    return r;
  }
  void loss_backward(const T* head, T* dh, T* dhead, double grad_scale) {
    tied_cross_entropy_backward(acts.final_out, head, targets + rows.row0, acts.ce_lse, dh, dhead,
                                rows.nr, m.d, c.vocab, logit_scale,
                                std::min<int64_t>(kLossVocabChunk, c.vocab),
                                static_cast<T>(grad_scale), logit_rounding);
  }

  // ---- Elementwise.

  void swiglu_forward(const T* h, T* s) { sambay::swiglu_forward(h, s, m.n, m.F); }
  void swiglu_backward(const T* ds, const T* h, T* dh) {
    sambay::swiglu_backward(ds, h, dh, m.n, m.F);
  }

  // ---- Mamba's causal conv1d and SiLU (run apart: the conv's output xc is kept), with a halo
  // of K - 1 positions before each run under CP (acts.conv_halo; the conv then runs over
  // [halo, run] in acts.conv_in and keeps the run's outputs).

  void conv_silu_forward(LayerActivations<T, T>& a, const T* halo, const T* w, const T* b) {
    if (!halo) {
      causal_conv1d_forward(a.xin, w, b, doc, a.xc, m.B, m.L, m.E, m.K);
    } else {
      const int64_t h = m.K - 1, Le = h + m.L;
      fill_conv_input(halo, a.xin);
      causal_conv1d_forward(acts.conv_in, w, b, conv_doc(), acts.conv_out, m.B, Le, m.E, m.K);
      for (int64_t r = 0; r < m.B; ++r)
        std::copy_n(acts.conv_out + (r * Le + h) * m.E, m.L * m.E, a.xc + r * m.L * m.E);
    }
    silu_forward(a.xc, a.xs, m.n * m.E);
  }
  // dxs -> dxin (added) and the conv's parameter gradients; under CP the halo's gradient is
  // left in acts.conv_halo for cp_return_conv_halo_grad.
  void conv_silu_backward(const T* dxs, const LayerActivations<T, T>& a, const T* halo,
                          const T* w, const T* /*b*/, T* dxin, T* dw, T* db) {
    T* dxc = acts.grad.dxc;
    zero(dxc, m.n * m.E);
    silu_backward(dxs, a.xc, dxc, m.n * m.E);
    if (!halo) {
      causal_conv1d_backward(dxc, a.xin, w, doc, dxin, dw, db, m.B, m.L, m.E, m.K);
      return;
    }
    const int64_t h = m.K - 1, Le = h + m.L;
    fill_conv_input(halo, a.xin);
    T* dy_ext = acts.conv_out;  // the halo's outputs are not part of the model: no gradient
    for (int64_t r = 0; r < m.B; ++r) {
      zero(dy_ext + r * Le * m.E, h * m.E);
      std::copy_n(dxc + r * m.L * m.E, m.L * m.E, dy_ext + (r * Le + h) * m.E);
    }
    zero(acts.conv_dx, m.B * Le * m.E);
    causal_conv1d_backward(dy_ext, acts.conv_in, w, conv_doc(), acts.conv_dx, dw, db, m.B, Le,
                           m.E, m.K);
    for (int64_t r = 0; r < m.B; ++r) {
      const T* dx = acts.conv_dx + r * Le * m.E;
      std::copy_n(dx, h * m.E, acts.conv_halo + r * h * m.E);
      for (int64_t i = 0; i < m.L * m.E; ++i) dxin[r * m.L * m.E + i] += dx[h * m.E + i];
    }
  }

  // ---- The selective scan (kernels/selective_scan.h), with a carried state under CP.

  void scan_forward(LayerActivations<T, T>& a, const T* dt_bias, const T* A_log, const T* D,
                    const ScanCarry<T>& carry) {
    selective_scan_forward(a.xs, a.dt, dt_bias, A_log, a.bc, a.cc, D, a.z, doc, a.y, a.sout,
                           scan_shape(), carry);
  }
  void scan_backward(const T* dsout, const T* dmemory, const LayerActivations<T, T>& a,
                     const T* dt_bias, const T* A_log, const T* D,
                     const graph::ScanGrads<T, T>& g, const ScanCarry<T>& carry) {
    selective_scan_backward(dsout, dmemory, a.xs, a.dt, dt_bias, A_log, a.bc, a.cc, D, a.z, doc,
                            g.dx, g.ddt, g.ddt_bias, g.dA_log, g.dB, g.dC, g.dD, g.dz,
                            scan_shape(), carry);
  }

  // ---- Attention, plain and differential (the layer's lambdas and head norm by its index).

  void attention_forward(const T* q, const T* k, const T* v, const int32_t* d, T* out, T* lse,
                         const AttentionShape& s) {
    sambay::attention_forward(q, k, v, d, out, lse, s, attention_scale);
  }
  void attention_backward(const T* dout, const T* q, const T* k, const T* v, const int32_t* d,
                          const T* out, const T* lse, T* dq, T* dk, T* dv,
                          const AttentionShape& s) {
    sambay::attention_backward(dout, q, k, v, d, out, lse, dq, dk, dv, s, attention_scale);
  }
  void diff_attention_forward(const T* q, const T* k, const T* v, const int32_t* d, int layer,
                              T* out, const DiffAttentionSaved& saved,
                              const DiffAttentionShape& s) {
    const LayerOffsets& o = lay.layers[layer];
    sambay::diff_attention_forward(q, k, v, d, P + o.lambda_q1, P + o.lambda_k1, P + o.lambda_q2,
                                   P + o.lambda_k2, static_cast<T>(lambda_init_for_layer(layer)),
                                   P + o.head_norm_w, out, saved, s, attention_scale,
                                   static_cast<T>(c.norm_eps));
  }
  void diff_attention_backward(const T* dout, const T* q, const T* k, const T* v,
                               const int32_t* d, int layer, const DiffAttentionSaved& saved,
                               T* dq, T* dk, T* dv, const DiffAttentionShape& s) {
    const LayerOffsets& o = lay.layers[layer];
    sambay::diff_attention_backward(dout, q, k, v, d, P + o.lambda_q1, P + o.lambda_k1,
                                    P + o.lambda_q2, P + o.lambda_k2,
                                    static_cast<T>(lambda_init_for_layer(layer)),
                                    P + o.head_norm_w, saved, dq, dk, dv, G + o.lambda_q1,
                                    G + o.lambda_k1, G + o.lambda_q2, G + o.lambda_k2,
                                    G + o.head_norm_w, s, attention_scale);
  }
  // In place on x [rows, L, heads, h] at absolute positions from `position`.
  void rope_forward(T* x, int64_t rows_, int64_t heads, int64_t position) {
    sambay::rope_forward(x, x, rows_, m.L, heads, m.h, c.rope_theta, position);
  }
  void rope_backward(const T* dy, T* dx, int64_t rows_, int64_t heads, int64_t position) {
    sambay::rope_backward(dy, dx, rows_, m.L, heads, m.h, c.rope_theta, position);
  }

  // ---- GMU: gate (and for the nGMU, the norm over every TP rank's channels, run apart).

  void gmu_forward(const T* memory, LayerActivations<T, T>& a, const T* norm_w) {
    if (!norm_w) {
      sambay::gmu_forward(memory, a.g, (const T*)nullptr, a.gm, (T*)nullptr, m.n, m.E, T(0));
      return;
    }
    sambay::gmu_forward(memory, a.g, (const T*)nullptr, a.gated, (T*)nullptr, m.n, m.E, T(0));
    rmsnorm_forward_sharded(a.gated, norm_w, a.gm, a.gmu_rstd, m.n, m.E, E_full,
                            static_cast<T>(c.norm_eps), inner_width_sum());
  }
  void gmu_backward(const T* dgm, const T* memory, const LayerActivations<T, T>& a,
                    const T* norm_w, T* dmemory, T* dg, T* dnorm_w) {
    const T* dgated = dgm;
    if (norm_w) {
      zero(acts.grad.dgated, m.n * m.E);
      rmsnorm_backward_sharded(dgm, a.gated, norm_w, a.gmu_rstd, acts.grad.dgated, dnorm_w, m.n,
                               m.E, E_full, inner_width_sum());
      dgated = acts.grad.dgated;
    }
    sambay::gmu_backward(dgated, memory, a.g, (const T*)nullptr, (const T*)nullptr, dmemory, dg,
                         (T*)nullptr, m.n, m.E);
  }

 private:
  SelectiveScanShape scan_shape() const { return {m.B, m.L, m.E, m.N}; }
  const int32_t* doc_whole() const {
    return acts.doc_whole.empty() ? nullptr : acts.doc_whole.data();
  }
  const int32_t* conv_doc() const { return acts.conv_doc.empty() ? nullptr : acts.conv_doc.data(); }
  // acts.conv_in: each run's halo, then the run.
  void fill_conv_input(const T* halo, const T* xin) {
    const int64_t h = m.K - 1, Le = h + m.L;
    for (int64_t r = 0; r < m.B; ++r) {
      std::copy_n(halo + r * h * m.E, h * m.E, acts.conv_in + r * Le * m.E);
      std::copy_n(xin + r * m.L * m.E, m.L * m.E, acts.conv_in + (r * Le + h) * m.E);
    }
  }
  // The nGMU's norm statistics are over the whole inner width: row sums summed over TP ranks.
  RowSumReducer inner_width_sum() const {
    if (!rows.tp) return RowSumReducer{};
    const Communicator* tp = rows.tp;
    return [tp](double* sums, int64_t n) { all_reduce(*tp, sums, n); };
  }
};

}  // namespace sambay
