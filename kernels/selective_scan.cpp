#include "kernels/selective_scan.h"

#include "core/check.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace sambay {
namespace {

void check_shape(const SelectiveScanShape& s) {
  SAMBAY_CHECK(s.B > 0 && s.L > 0 && s.E > 0 && s.N > 0,
               "selective_scan needs positive sizes, got B={} L={} E={} N={}", s.B, s.L, s.E, s.N);
}

// log(1 + e^v) without overflow of e^v for large v and without losing the tail for very
// negative v: max(v, 0) + log1p(e^{-|v|}).
template <typename T>
T softplus(T v) {
  return std::max(v, T(0)) + std::log1p(std::exp(-std::abs(v)));
}

// 1 / (1 + e^{-v}), evaluated so that the exponential never overflows.
template <typename T>
T sigmoid(T v) {
  if (v >= 0) return T(1) / (T(1) + std::exp(-v));
  const T e = std::exp(v);
  return e / (T(1) + e);
}

// True where token t of row b opens a new document: the state restarts from zero there.
bool starts_document(const int32_t* doc, int64_t b, int64_t t, int64_t L) {
  return doc && t > 0 && doc[b * L + t] != doc[b * L + t - 1];
}

// One step of the recurrence for one channel: next = exp(delta * A) * prev + delta * x * B_t.
// prev == nullptr means a zero state (sequence or document start); next may alias prev. Forward
// and backward both use this, so the backward's recomputed states are bit-identical.
template <typename T>
void advance_state(T* next, const T* prev, T delta, const T* A, T x, const T* Bt, int64_t N) {
  for (int64_t n = 0; n < N; ++n) {
    const T carried = prev ? std::exp(delta * A[n]) * prev[n] : T(0);
    next[n] = carried + delta * x * Bt[n];
  }
}

// y_t = <s_t, C_t> + D * x_t, the dot product summed in double.
template <typename T>
T readout(const T* state, const T* Ct, T D, T x, int64_t N) {
  double acc = 0;
  for (int64_t n = 0; n < N; ++n) acc += double(state[n]) * Ct[n];
  return T(acc + double(D) * x);
}

}  // namespace

template <typename T>
void selective_scan_forward(const T* x, const T* dt, const T* dt_bias, const T* A_log, const T* Bc,
                            const T* Cc, const T* D, const T* z, const int32_t* doc, T* y, T* out,
                            const SelectiveScanShape& s, const ScanCarry<T>& carry) {
  check_shape(s);
  const int64_t B = s.B, L = s.L, E = s.E, N = s.N;
#pragma omp parallel
  {
    std::vector<T> A(N), state(N);
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t e = 0; e < E; ++e) {
        for (int64_t n = 0; n < N; ++n) A[n] = -std::exp(A_log[e * N + n]);
        const int64_t c = (b * E + e) * N;  // the channel's row of the [B, E, N] carried states
        const T* state_in = carry.state_in ? carry.state_in + c : nullptr;
        // prod_t exp(delta_t A) = exp(A sum_t delta_t): one exponential per state at the end.
        double delta_sum = 0;
        bool reset = false;
        for (int64_t t = 0; t < L; ++t) {
          const int64_t i = (b * L + t) * E + e;
          const bool doc_start = starts_document(doc, b, t, L);
          const T* prev = doc_start ? nullptr : t > 0 ? state.data() : state_in;
          const T delta = softplus(dt[i] + dt_bias[e]);
          const T* Bt = Bc + (b * L + t) * N;
          const T* Ct = Cc + (b * L + t) * N;
          advance_state(state.data(), prev, delta, A.data(), x[i], Bt, N);
          y[i] = readout(state.data(), Ct, D[e], x[i], N);
          out[i] = y[i] * z[i] * sigmoid(z[i]);
          delta_sum += delta;
          reset = reset || doc_start;
        }
        if (carry.state_out) std::copy(state.begin(), state.end(), carry.state_out + c);
        if (carry.decay_out)
          for (int64_t n = 0; n < N; ++n)
            carry.decay_out[c + n] = reset ? T(0) : T(std::exp(delta_sum * A[n]));
      }
    }
  }
}

// Backward, one channel (b, e) at a time: recompute its states s_0..s_{L-1} into an L x N buffer,
// then walk t backwards carrying g = dLoss/ds_t, from dstate_out down to dLoss/dstate_in.
// Threads split the channels by e (looping b inside), so the per-channel parameters dt_bias,
// A_log and D are each summed by one thread.
// dBc and dCc sum over all E channels; each thread adds into its own [B, L, N] partial buffer,
// and the partials are added up in thread order at the end.
template <typename T>
void selective_scan_backward(const T* dout, const T* dy_extra, const T* x, const T* dt,
                             const T* dt_bias, const T* A_log, const T* Bc, const T* Cc, const T* D,
                             const T* z, const int32_t* doc, T* dx, T* ddt, T* ddt_bias, T* dA_log,
                             T* dBc, T* dCc, T* dD, T* dz, const SelectiveScanShape& s,
                             const ScanCarry<T>& carry) {
  check_shape(s);
  const int64_t B = s.B, L = s.L, E = s.E, N = s.N;
  const int64_t bln = B * L * N;
  const int threads = omp_get_max_threads();
  std::vector<std::vector<double>> dB_part(dBc ? threads : 0), dC_part(dCc ? threads : 0);

#pragma omp parallel
  {
    const int tid = omp_get_thread_num();
    if (dBc) dB_part[tid].assign(bln, 0.0);
    if (dCc) dC_part[tid].assign(bln, 0.0);
    double* dB_mine = dBc ? dB_part[tid].data() : nullptr;
    double* dC_mine = dCc ? dC_part[tid].data() : nullptr;
    std::vector<T> A(N), states(L * N), deltas(L), g(N);
    std::vector<double> dA_sum(N);

#pragma omp for schedule(static)
    for (int64_t e = 0; e < E; ++e) {
      for (int64_t n = 0; n < N; ++n) A[n] = -std::exp(A_log[e * N + n]);
      std::fill(dA_sum.begin(), dA_sum.end(), 0.0);
      double dD_sum = 0, ddt_bias_sum = 0;

      for (int64_t b = 0; b < B; ++b) {
        const int64_t c = (b * E + e) * N;  // the channel's row of the [B, E, N] carried states
        const T* state_in = carry.state_in ? carry.state_in + c : nullptr;
        // The state before token t as the forward had it (null: zero).
        auto previous = [&](int64_t t, bool doc_start) -> const T* {
          if (doc_start) return nullptr;
          return t > 0 ? &states[(t - 1) * N] : state_in;
        };
        // Recompute the states of channel (b, e).
        for (int64_t t = 0; t < L; ++t) {
          const int64_t i = (b * L + t) * E + e;
          deltas[t] = softplus(dt[i] + dt_bias[e]);
          advance_state(&states[t * N], previous(t, starts_document(doc, b, t, L)), deltas[t],
                        A.data(), x[i], Bc + (b * L + t) * N, N);
        }

        if (carry.dstate_out)
          std::copy_n(carry.dstate_out + c, N, g.begin());
        else
          std::fill(g.begin(), g.end(), T(0));
        for (int64_t t = L - 1; t >= 0; --t) {
          const int64_t i = (b * L + t) * E + e;
          const int64_t bt = (b * L + t) * N;
          const T* st = &states[t * N];
          const bool doc_start = starts_document(doc, b, t, L);
          const T* prev = previous(t, doc_start);
          const T delta = deltas[t], xv = x[i], zv = z[i];
          const T sig = sigmoid(zv);

          // Gate: out = y * silu(z).
          const T gy = dout[i] * zv * sig + (dy_extra ? dy_extra[i] : T(0));
          if (dz) {
            const T yv = readout(st, Cc + bt, D[e], xv, N);
            dz[i] += dout[i] * yv * sig * (T(1) + zv * (T(1) - sig));
          }

          // Readout y = <s_t, C_t> + D x, then the step s_t = exp(delta A) s_{t-1} + delta x B_t.
          dD_sum += double(gy) * xv;
          T dxv = gy * D[e];
          double ddelta = 0;
          for (int64_t n = 0; n < N; ++n) {
            if (dC_mine) dC_mine[bt + n] += double(gy) * st[n];
            const T gn = g[n] + gy * Cc[bt + n];  // dLoss/ds_t[n], all paths
            const T Bn = Bc[bt + n];
            dxv += gn * delta * Bn;
            if (dB_mine) dB_mine[bt + n] += double(gn) * delta * xv;
            if (prev) {
              const T decay = std::exp(delta * A[n]);
              ddelta += double(gn) * (A[n] * decay * prev[n] + xv * Bn);
              dA_sum[n] += double(gn) * delta * decay * prev[n];
              g[n] = gn * decay;
            } else {
              ddelta += double(gn) * xv * Bn;
              // s_{t-1} does not reach s_t across a document start. At token 0 without state_in,
              // s_{-1} is a zero state_in that does reach s_0: its gradient is wanted all the same.
              g[n] = doc_start ? T(0) : gn * std::exp(delta * A[n]);
            }
          }
          if (dx) dx[i] += dxv;
          const double ddt_i = ddelta * sigmoid(dt[i] + dt_bias[e]);  // softplus' = sigmoid
          if (ddt) ddt[i] += T(ddt_i);
          ddt_bias_sum += ddt_i;
        }
        if (carry.dstate_in)  // g is now dLoss/ds_{-1}
          for (int64_t n = 0; n < N; ++n) carry.dstate_in[c + n] += g[n];
      }

      if (dD) dD[e] += T(dD_sum);
      if (ddt_bias) ddt_bias[e] += T(ddt_bias_sum);
      if (dA_log)  // A = -exp(A_log), so dA/dA_log = A
        for (int64_t n = 0; n < N; ++n) dA_log[e * N + n] += T(dA_sum[n] * A[n]);
    }

    // The implicit barrier of the loop above makes every partial complete. A thread the team
    // did not get (fewer than max threads) left its partial empty.
    if (dBc || dCc) {
#pragma omp for schedule(static)
      for (int64_t j = 0; j < bln; ++j) {
        double sum_B = 0, sum_C = 0;
        for (int p = 0; p < threads; ++p) {
          if (dBc && !dB_part[p].empty()) sum_B += dB_part[p][j];
          if (dCc && !dC_part[p].empty()) sum_C += dC_part[p][j];
        }
        if (dBc) dBc[j] += T(sum_B);
        if (dCc) dCc[j] += T(sum_C);
      }
    }
  }
}

template void selective_scan_forward<float>(const float*, const float*, const float*, const float*,
                                            const float*, const float*, const float*, const float*,
                                            const int32_t*, float*, float*,
                                            const SelectiveScanShape&, const ScanCarry<float>&);
template void selective_scan_forward<double>(const double*, const double*, const double*,
                                             const double*, const double*, const double*,
                                             const double*, const double*, const int32_t*, double*,
                                             double*, const SelectiveScanShape&,
                                             const ScanCarry<double>&);
template void selective_scan_backward<float>(const float*, const float*, const float*, const float*,
                                             const float*, const float*, const float*, const float*,
                                             const float*, const float*, const int32_t*, float*,
                                             float*, float*, float*, float*, float*, float*, float*,
                                             const SelectiveScanShape&, const ScanCarry<float>&);
template void selective_scan_backward<double>(const double*, const double*, const double*,
                                              const double*, const double*, const double*,
                                              const double*, const double*, const double*,
                                              const double*, const int32_t*, double*, double*,
                                              double*, double*, double*, double*, double*, double*,
                                              const SelectiveScanShape&, const ScanCarry<double>&);

}  // namespace sambay
