#include "kernels/diff_attention.h"

#include "core/check.h"

#include <cmath>
#include <vector>

// Layout note: a [B, L, H, h] tensor read as [B, L, H/2, 2h] puts heads 2i and 2i+1 side by side
// in row i. So v viewed as [B, L, G/2, 2h] already is concat(v_2j, v_2j+1), and the output
// [B, L, H/2, 2h] of the head norm already is the split into query slots 2i, 2i+1. Only q and k
// need gathering into separate first-of-pair / second-of-pair tensors.

namespace sambay {
namespace {

// Keys (and values) per batch row.
int64_t keys(const DiffAttentionShape& s) { return s.Lk ? s.Lk : s.L; }

void check_shape(const DiffAttentionShape& s) {
  SAMBAY_CHECK(s.B > 0 && s.L > 0 && s.h > 0,
               "differential attention needs B, L, h > 0, got B={} L={} h={}", s.B, s.L, s.h);
  SAMBAY_CHECK(s.H > 0 && s.G > 0 && s.H % 2 == 0 && s.G % 2 == 0,
               "differential attention pairs heads: H={} and G={} must be positive and even", s.H,
               s.G);
  SAMBAY_CHECK(s.H % s.G == 0, "query heads H={} must be a multiple of key/value heads G={}", s.H,
               s.G);
  SAMBAY_CHECK(s.window >= 0, "attention window must be 0 (full) or positive, got {}", s.window);
  SAMBAY_CHECK(s.Lk >= 0 && s.q_offset >= 0 && s.q_offset + s.L <= keys(s),
               "differential attention queries [q_offset, q_offset + L) = [{}, {}) must lie "
               "within the Lk={} keys (Lk 0 means L)",
               s.q_offset, s.q_offset + s.L, s.Lk);
}

// Each of the two softmax attentions: H/2 query heads over G/2 key/value heads, value dim 2h.
AttentionShape pair_shape(const DiffAttentionShape& s) {
  return {s.B, s.L, s.H / 2, s.G / 2, s.h, 2 * s.h, s.window, s.Lk, s.q_offset};
}

// x [rows, 2, h] -> first [rows, h] (heads 2i), second [rows, h] (heads 2i+1).
template <typename T>
void split_pairs(const T* x, T* first, T* second, int64_t rows, int64_t h) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < h; ++c) {
      first[r * h + c] = x[(2 * r) * h + c];
      second[r * h + c] = x[(2 * r + 1) * h + c];
    }
}

// x [rows, 2, h] += interleave(first, second): the inverse of split_pairs, accumulating.
template <typename T>
void add_pairs(const T* first, const T* second, T* x, int64_t rows, int64_t h) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < h; ++c) {
      x[(2 * r) * h + c] += first[r * h + c];
      x[(2 * r + 1) * h + c] += second[r * h + c];
    }
}

template <typename T>
double dot_vec(const T* a, const T* b, int64_t n) {
  double acc = 0;
  for (int64_t i = 0; i < n; ++i) acc += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  return acc;
}

}  // namespace

DiffAttentionSavedSizes diff_attention_saved_sizes(const DiffAttentionShape& s) {
  check_shape(s);
  const int64_t rows = s.B * s.L * (s.H / 2);  // one row per (b, t, differential head)
  return {rows * 2 * s.h, rows * 2 * s.h, rows, rows, rows};
}

template <typename T>
void diff_attention_forward(const T* q, const T* k, const T* v, const int32_t* doc, const T* lq1,
                            const T* lk1, const T* lq2, const T* lk2, T lambda_init,
                            const T* norm_weight, T* out, const DiffAttentionSaved& saved,
                            const DiffAttentionShape& s, T scale, T eps) {
  check_shape(s);
  const double lambda = std::exp(dot_vec(lq1, lk1, s.h)) - std::exp(dot_vec(lq2, lk2, s.h)) +
                        static_cast<double>(lambda_init);
  *saved.lambda = lambda;
  T* a1 = static_cast<T*>(saved.a1);
  T* a2 = static_cast<T*>(saved.a2);
  T* rstd = static_cast<T*>(saved.rstd);

  const int64_t q_rows = s.B * s.L * (s.H / 2), k_rows = s.B * keys(s) * (s.G / 2);
  std::vector<T> q1(q_rows * s.h), q2(q_rows * s.h), k1(k_rows * s.h), k2(k_rows * s.h);
  split_pairs(q, q1.data(), q2.data(), q_rows, s.h);
  split_pairs(k, k1.data(), k2.data(), k_rows, s.h);
  const AttentionShape inner = pair_shape(s);
  attention_forward(q1.data(), k1.data(), v, doc, a1, static_cast<T*>(saved.lse1), inner, scale);
  attention_forward(q2.data(), k2.data(), v, doc, a2, static_cast<T*>(saved.lse2), inner, scale);

  // o = a1 - lambda a2, then RMSNorm over 2h, times (1 - lambda_init).
  const int64_t n = 2 * s.h;
  const double out_scale = 1.0 - static_cast<double>(lambda_init);
#pragma omp parallel
  {
    std::vector<double> o(n);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < q_rows; ++r) {
      double sum_sq = 0;
      for (int64_t c = 0; c < n; ++c) {
        o[c] = static_cast<double>(a1[r * n + c]) - lambda * static_cast<double>(a2[r * n + c]);
        sum_sq += o[c] * o[c];
      }
      const double rs = 1.0 / std::sqrt(sum_sq / n + static_cast<double>(eps));
      rstd[r] = static_cast<T>(rs);
      for (int64_t c = 0; c < n; ++c)
        out[r * n + c] =
            static_cast<T>(o[c] * rs * static_cast<double>(norm_weight[c]) * out_scale);
    }
  }
}

// Backward through the head norm (x^ = o * rstd, y = c w x^ with c = 1 - lambda_init):
//   g = c w dy,  do = rstd (g - x^ mean(g x^)),  dw += c dy x^.
// Then o = a1 - lambda a2 gives da1 = do, da2 = -lambda do, dlambda = -<do, a2>, and
// lambda = exp(<lq1, lk1>) - exp(<lq2, lk2>) + lambda_init gives the four vector gradients.
template <typename T>
void diff_attention_backward(const T* dout, const T* q, const T* k, const T* v,
                             const int32_t* doc, const T* lq1, const T* lk1, const T* lq2,
                             const T* lk2, T lambda_init, const T* norm_weight,
                             const DiffAttentionSaved& saved, T* dq, T* dk, T* dv, T* dlq1,
                             T* dlk1, T* dlq2, T* dlk2, T* dnorm_weight,
                             const DiffAttentionShape& s, T scale) {
  check_shape(s);
  const double lambda = *saved.lambda;
  const T* a1 = static_cast<const T*>(saved.a1);
  const T* a2 = static_cast<const T*>(saved.a2);
  const T* rstd = static_cast<const T*>(saved.rstd);
  const int64_t q_rows = s.B * s.L * (s.H / 2), k_rows = s.B * keys(s) * (s.G / 2);
  const int64_t n = 2 * s.h;
  const double c = 1.0 - static_cast<double>(lambda_init);

  // Serial over rows so the dnorm_weight and dlambda sums do not depend on the thread count;
  // this is O(rows * 2h), small next to the attention backward.
  std::vector<T> da1(q_rows * n), da2(q_rows * n);
  std::vector<double> dw(n, 0.0), o(n), g(n);
  double dlambda = 0;
  for (int64_t r = 0; r < q_rows; ++r) {
    const double rs = static_cast<double>(rstd[r]);
    double mean_gx = 0;
    for (int64_t j = 0; j < n; ++j) {
      o[j] = static_cast<double>(a1[r * n + j]) - lambda * static_cast<double>(a2[r * n + j]);
      const double dy = static_cast<double>(dout[r * n + j]);
      g[j] = c * static_cast<double>(norm_weight[j]) * dy;
      dw[j] += c * dy * o[j] * rs;
      mean_gx += g[j] * o[j] * rs;
    }
    mean_gx /= n;
    for (int64_t j = 0; j < n; ++j) {
      const double d_o = rs * (g[j] - o[j] * rs * mean_gx);
      da1[r * n + j] = static_cast<T>(d_o);
      da2[r * n + j] = static_cast<T>(-lambda * d_o);
      dlambda -= d_o * static_cast<double>(a2[r * n + j]);
    }
  }
  if (dnorm_weight)
    for (int64_t j = 0; j < n; ++j) dnorm_weight[j] += static_cast<T>(dw[j]);

  const double e1 = std::exp(dot_vec(lq1, lk1, s.h)), e2 = std::exp(dot_vec(lq2, lk2, s.h));
  for (int64_t j = 0; j < s.h; ++j) {
    if (dlq1) dlq1[j] += static_cast<T>(dlambda * e1 * static_cast<double>(lk1[j]));
    if (dlk1) dlk1[j] += static_cast<T>(dlambda * e1 * static_cast<double>(lq1[j]));
    if (dlq2) dlq2[j] -= static_cast<T>(dlambda * e2 * static_cast<double>(lk2[j]));
    if (dlk2) dlk2[j] -= static_cast<T>(dlambda * e2 * static_cast<double>(lq2[j]));
  }

  if (!dq && !dk && !dv) return;
  std::vector<T> q1(q_rows * s.h), q2(q_rows * s.h), k1(k_rows * s.h), k2(k_rows * s.h);
  split_pairs(q, q1.data(), q2.data(), q_rows, s.h);
  split_pairs(k, k1.data(), k2.data(), k_rows, s.h);
  std::vector<T> dq1(dq ? q_rows * s.h : 0), dq2(dq1.size());
  std::vector<T> dk1(dk ? k_rows * s.h : 0), dk2(dk1.size());
  const AttentionShape inner = pair_shape(s);
  // Both maps read the same v, so both add into dv directly (viewed as [B, L, G/2, 2h]).
  attention_backward(da1.data(), q1.data(), k1.data(), v, doc, a1,
                     static_cast<const T*>(saved.lse1), dq ? dq1.data() : nullptr,
                     dk ? dk1.data() : nullptr, dv, inner, scale);
  attention_backward(da2.data(), q2.data(), k2.data(), v, doc, a2,
                     static_cast<const T*>(saved.lse2), dq ? dq2.data() : nullptr,
                     dk ? dk2.data() : nullptr, dv, inner, scale);
  if (dq) add_pairs(dq1.data(), dq2.data(), dq, q_rows, s.h);
  if (dk) add_pairs(dk1.data(), dk2.data(), dk, k_rows, s.h);
}

template void diff_attention_forward<float>(const float*, const float*, const float*,
                                            const int32_t*, const float*, const float*,
                                            const float*, const float*, float, const float*,
                                            float*, const DiffAttentionSaved&,
                                            const DiffAttentionShape&, float, float);
template void diff_attention_forward<double>(const double*, const double*, const double*,
                                             const int32_t*, const double*, const double*,
                                             const double*, const double*, double, const double*,
                                             double*, const DiffAttentionSaved&,
                                             const DiffAttentionShape&, double, double);
template void diff_attention_backward<float>(const float*, const float*, const float*,
                                             const float*, const int32_t*, const float*,
                                             const float*, const float*, const float*, float,
                                             const float*, const DiffAttentionSaved&, float*,
                                             float*, float*, float*, float*, float*, float*,
                                             float*, const DiffAttentionShape&, float);
template void diff_attention_backward<double>(const double*, const double*, const double*,
                                              const double*, const int32_t*, const double*,
                                              const double*, const double*, const double*, double,
                                              const double*, const DiffAttentionSaved&, double*,
                                              double*, double*, double*, double*, double*,
                                              double*, double*, const DiffAttentionShape&,
                                              double);

}  // namespace sambay
