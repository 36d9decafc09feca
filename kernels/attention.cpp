#include "kernels/attention.h"

#include "core/check.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace sambay {

void check_attention_shape(const AttentionShape& s) {
  SAMBAY_CHECK(s.B > 0 && s.L > 0, "attention needs B > 0 and L > 0, got B={} L={}", s.B, s.L);
  SAMBAY_CHECK(s.H > 0 && s.G > 0 && s.H % s.G == 0,
               "query heads H={} must be a positive multiple of key/value heads G={}", s.H, s.G);
  SAMBAY_CHECK(s.dk > 0 && s.dv > 0, "attention head dims must be positive, got dk={} dv={}",
               s.dk, s.dv);
  SAMBAY_CHECK(s.window >= 0, "attention window must be 0 (full) or positive, got {}", s.window);
  SAMBAY_CHECK(s.Lk >= 0 && s.q_offset >= 0 && s.q_offset + s.L <= attention_keys(s),
               "attention queries [q_offset, q_offset + L) = [{}, {}) must lie within the Lk={} "
               "keys (Lk 0 means L)",
               s.q_offset, s.q_offset + s.L, s.Lk);
}

namespace {

// The first key the query at position p may see: the start of its window, or 0 under full
// causal attention.
int64_t first_key(int64_t p, int64_t window) {
  return window > 0 ? std::max<int64_t>(0, p - window + 1) : 0;
}

template <typename T>
double dot_row(const T* a, const T* b, int64_t n) {
  double acc = 0;
  for (int64_t i = 0; i < n; ++i) acc += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  return acc;
}

// Row pointers into the [B, positions, heads, d] layouts: positions is L for q and out, the
// number of keys for k and v.
template <typename T>
T* row(T* base, int64_t b, int64_t t, int64_t head, int64_t positions, int64_t heads, int64_t d) {
  return base + ((b * positions + t) * heads + head) * d;
}

}  // namespace

template <typename T>
void attention_forward(const T* q, const T* k, const T* v, const int32_t* doc, T* out, T* lse,
                       const AttentionShape& s, T scale) {
  check_attention_shape(s);
  const int64_t group = s.H / s.G, Lk = attention_keys(s);
  const double sc = static_cast<double>(scale);
#pragma omp parallel
  {
    // One query row of scores and the output accumulator: the only per-row scratch.
    std::vector<double> score(Lk), acc(s.dv);
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < s.B; ++b) {
      for (int64_t h = 0; h < s.H; ++h) {
        const int64_t g = h / group;
        const int32_t* doc_b = doc ? doc + b * Lk : nullptr;
        for (int64_t t = 0; t < s.L; ++t) {
          const T* q_t = row(q, b, t, h, s.L, s.H, s.dk);
          const int64_t p_t = s.q_offset + t;  // the query's position among the keys
          const int64_t lo = first_key(p_t, s.window);
          auto visible = [&](int64_t j) { return !doc_b || doc_b[j] == doc_b[p_t]; };
          double max_score = -INFINITY;
          for (int64_t j = lo; j <= p_t; ++j) {
            if (!visible(j)) continue;
            score[j] = sc * dot_row(q_t, row(k, b, j, g, Lk, s.G, s.dk), s.dk);
            max_score = std::max(max_score, score[j]);
          }
          // Key p_t is always visible, so max_score is finite and sum >= 1.
          double sum = 0;
          std::fill(acc.begin(), acc.end(), 0.0);
          for (int64_t j = lo; j <= p_t; ++j) {
            if (!visible(j)) continue;
            const double p = std::exp(score[j] - max_score);
            sum += p;
            const T* v_j = row(v, b, j, g, Lk, s.G, s.dv);
            for (int64_t c = 0; c < s.dv; ++c) acc[c] += p * static_cast<double>(v_j[c]);
          }
          T* out_t = row(out, b, t, h, s.L, s.H, s.dv);
          for (int64_t c = 0; c < s.dv; ++c) out_t[c] = static_cast<T>(acc[c] / sum);
          lse[(b * s.H + h) * s.L + t] = static_cast<T>(max_score + std::log(sum));
        }
      }
    }
  }
}

// With p_tj = exp(scale <q_t, k_j> - lse_t) and D_t = <dout_t, out_t>:
//   dS_tj = p_tj (<dout_t, v_j> - D_t),  dq_t += scale sum_j dS_tj k_j,
//   dk_j += scale sum_t dS_tj q_t,       dv_j += sum_t p_tj dout_t.
// Work is split over (b, kv head): the query heads of a group all write the same dk/dv rows, so
// one thread owns them and accumulates them in double before adding once into the output.
template <typename T>
void attention_backward(const T* dout, const T* q, const T* k, const T* v, const int32_t* doc,
                        const T* out, const T* lse, T* dq, T* dk, T* dv, const AttentionShape& s,
                        T scale) {
  check_attention_shape(s);
  if (!dq && !dk && !dv) return;
  const int64_t group = s.H / s.G, Lk = attention_keys(s);
  // Keys after the last query's position get no gradient.
  const int64_t seen = s.q_offset + s.L;
  const double sc = static_cast<double>(scale);
#pragma omp parallel
  {
    std::vector<double> dk_acc(dk ? seen * s.dk : 0), dv_acc(dv ? seen * s.dv : 0), dq_row(s.dk);
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < s.B; ++b) {
      for (int64_t g = 0; g < s.G; ++g) {
        const int32_t* doc_b = doc ? doc + b * Lk : nullptr;
        std::fill(dk_acc.begin(), dk_acc.end(), 0.0);
        std::fill(dv_acc.begin(), dv_acc.end(), 0.0);
        for (int64_t h = g * group; h < (g + 1) * group; ++h) {
          for (int64_t t = 0; t < s.L; ++t) {
            const T* q_t = row(q, b, t, h, s.L, s.H, s.dk);
            const T* dout_t = row(dout, b, t, h, s.L, s.H, s.dv);
            const double d_t = dot_row(dout_t, row(out, b, t, h, s.L, s.H, s.dv), s.dv);
            const double lse_t = static_cast<double>(lse[(b * s.H + h) * s.L + t]);
            const int64_t p_t = s.q_offset + t;  // the query's position among the keys
            std::fill(dq_row.begin(), dq_row.end(), 0.0);
            for (int64_t j = first_key(p_t, s.window); j <= p_t; ++j) {
              if (doc_b && doc_b[j] != doc_b[p_t]) continue;
              const T* k_j = row(k, b, j, g, Lk, s.G, s.dk);
              const T* v_j = row(v, b, j, g, Lk, s.G, s.dv);
              const double p = std::exp(sc * dot_row(q_t, k_j, s.dk) - lse_t);
              const double ds = p * (dot_row(dout_t, v_j, s.dv) - d_t);
              if (dq)
                for (int64_t c = 0; c < s.dk; ++c) dq_row[c] += ds * static_cast<double>(k_j[c]);
              if (dk)
                for (int64_t c = 0; c < s.dk; ++c)
                  dk_acc[j * s.dk + c] += sc * ds * static_cast<double>(q_t[c]);
              if (dv)
                for (int64_t c = 0; c < s.dv; ++c)
                  dv_acc[j * s.dv + c] += p * static_cast<double>(dout_t[c]);
            }
            if (dq) {
              T* dq_t = row(dq, b, t, h, s.L, s.H, s.dk);
              for (int64_t c = 0; c < s.dk; ++c) dq_t[c] += static_cast<T>(sc * dq_row[c]);
            }
          }
        }
        for (int64_t j = 0; j < seen; ++j) {
          if (dk) {
            T* dk_j = row(dk, b, j, g, Lk, s.G, s.dk);
            for (int64_t c = 0; c < s.dk; ++c) dk_j[c] += static_cast<T>(dk_acc[j * s.dk + c]);
          }
          if (dv) {
            T* dv_j = row(dv, b, j, g, Lk, s.G, s.dv);
            for (int64_t c = 0; c < s.dv; ++c) dv_j[c] += static_cast<T>(dv_acc[j * s.dv + c]);
          }
        }
      }
    }
  }
}

template void attention_forward<float>(const float*, const float*, const float*, const int32_t*,
                                       float*, float*, const AttentionShape&, float);
template void attention_forward<double>(const double*, const double*, const double*,
                                        const int32_t*, double*, double*, const AttentionShape&,
                                        double);
template void attention_backward<float>(const float*, const float*, const float*, const float*,
                                        const int32_t*, const float*, const float*, float*, float*,
                                        float*, const AttentionShape&, float);
template void attention_backward<double>(const double*, const double*, const double*,
                                         const double*, const int32_t*, const double*,
                                         const double*, double*, double*, double*,
                                         const AttentionShape&, double);

}  // namespace sambay
