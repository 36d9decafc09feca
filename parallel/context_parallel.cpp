#include "parallel/context_parallel.h"

#include <algorithm>
#include <vector>

namespace sambay {

template <typename T>
void gather_sequence(const Communicator& cp, const T* local, T* whole, int64_t B, int64_t Lc,
                     int64_t w) {
  const int64_t chunk = B * Lc * w;
  std::vector<T> blocks(chunk * cp.size);  // [cp, B, Lc, w]
  all_gather(cp, local, blocks.data(), chunk, dtype_of<T>());
  const int64_t L = Lc * cp.size;
  for (int r = 0; r < cp.size; ++r)
    for (int64_t b = 0; b < B; ++b)
      std::copy_n(blocks.data() + r * chunk + b * Lc * w, Lc * w, whole + (b * L + r * Lc) * w);
}

template <typename T>
void reduce_scatter_sequence_add(const Communicator& cp, const T* whole, T* local, int64_t B,
                                 int64_t Lc, int64_t w) {
  const int64_t chunk = B * Lc * w;
  const int64_t L = Lc * cp.size;
  std::vector<T> blocks(chunk * cp.size), mine(chunk);  // block r: chunk r of every row
  for (int r = 0; r < cp.size; ++r)
    for (int64_t b = 0; b < B; ++b)
      std::copy_n(whole + (b * L + r * Lc) * w, Lc * w, blocks.data() + r * chunk + b * Lc * w);
  reduce_scatter(cp, blocks.data(), mine.data(), chunk, dtype_of<T>(), ReduceOp::sum);
  for (int64_t i = 0; i < chunk; ++i) local[i] += mine[i];
}

namespace {

// Every rank's last k positions of each row: [cp, B, k, w].
template <typename T>
std::vector<T> gather_tails(const Communicator& cp, const T* local, int64_t B, int64_t Lc,
                            int64_t w, int64_t k) {
  std::vector<T> tail(B * k * w), all(B * k * w * cp.size);
  for (int64_t b = 0; b < B; ++b)
    std::copy_n(local + (b * Lc + Lc - k) * w, k * w, tail.data() + b * k * w);
  all_gather(cp, tail.data(), all.data(), B * k * w, dtype_of<T>());
  return all;
}

// Chunk r starts a new document in row b (so no state crosses into it).
bool starts_document(const int32_t* doc_whole, int64_t b, int r, int64_t L, int64_t Lc) {
  return doc_whole && doc_whole[b * L + r * Lc] != doc_whole[b * L + r * Lc - 1];
}

}  // namespace

template <typename T>
void previous_halo(const Communicator& cp, const T* local, T* halo, int64_t B, int64_t Lc,
                   int64_t w, int64_t k) {
  const std::vector<T> all = gather_tails(cp, local, B, Lc, w, k);
  if (cp.rank == 0)
    std::fill_n(halo, B * k * w, T(0));
  else
    std::copy_n(all.data() + (cp.rank - 1) * B * k * w, B * k * w, halo);
}

template <typename T>
void return_halo_grad(const Communicator& cp, const T* dhalo, T* dlocal, int64_t B, int64_t Lc,
                      int64_t w, int64_t k) {
  std::vector<T> all(B * k * w * cp.size);
  all_gather(cp, dhalo, all.data(), B * k * w, dtype_of<T>());
  if (cp.rank + 1 == cp.size) return;
  const T* from_next = all.data() + (cp.rank + 1) * B * k * w;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < k * w; ++i) dlocal[(b * Lc + Lc - k) * w + i] += from_next[b * k * w + i];
}

template <typename T>
void carry_scan_state(const Communicator& cp, const T* state_out, const T* decay,
                      const int32_t* doc_whole, T* state_in, int64_t B, int64_t Lc, int64_t S) {
  const int64_t n = B * S;
  std::vector<T> outs(n * cp.size), decays(n * cp.size);
  all_gather(cp, state_out, outs.data(), n, dtype_of<T>());
  all_gather(cp, decay, decays.data(), n, dtype_of<T>());
  const int64_t L = Lc * cp.size;
  std::fill_n(state_in, n, T(0));
  for (int r = 1; r <= cp.rank; ++r)  // state_in holds rank r-1's and becomes rank r's
    for (int64_t b = 0; b < B; ++b) {
      T* s = state_in + b * S;
      if (starts_document(doc_whole, b, r, L, Lc)) {
        std::fill_n(s, S, T(0));
        continue;
      }
      const T* o = outs.data() + (r - 1) * n + b * S;
      const T* d = decays.data() + (r - 1) * n + b * S;
      for (int64_t i = 0; i < S; ++i) s[i] = o[i] + d[i] * s[i];
    }
}

template <typename T>
void carry_scan_grad(const Communicator& cp, const T* dstate_in_local, const T* decay,
                     const int32_t* doc_whole, T* dstate_out, int64_t B, int64_t Lc, int64_t S) {
  const int64_t n = B * S;
  std::vector<T> locals(n * cp.size), decays(n * cp.size);
  all_gather(cp, dstate_in_local, locals.data(), n, dtype_of<T>());
  all_gather(cp, decay, decays.data(), n, dtype_of<T>());
  const int64_t L = Lc * cp.size;
  std::fill_n(dstate_out, n, T(0));
  // dstate_out holds rank r's and becomes rank r-1's.
  for (int r = cp.size - 1; r > cp.rank; --r)
    for (int64_t b = 0; b < B; ++b) {
      T* g = dstate_out + b * S;
      if (starts_document(doc_whole, b, r, L, Lc)) {
        std::fill_n(g, S, T(0));
        continue;
      }
      const T* loc = locals.data() + r * n + b * S;
      const T* d = decays.data() + r * n + b * S;
      for (int64_t i = 0; i < S; ++i) g[i] = loc[i] + d[i] * g[i];
    }
}

#define SAMBAY_CP_FLOAT(T)                                                                      \
  template void reduce_scatter_sequence_add<T>(const Communicator&, const T*, T*, int64_t,      \
                                               int64_t, int64_t);                               \
  template void previous_halo<T>(const Communicator&, const T*, T*, int64_t, int64_t, int64_t,  \
                                 int64_t);                                                      \
  template void return_halo_grad<T>(const Communicator&, const T*, T*, int64_t, int64_t,       \
                                    int64_t, int64_t);                                          \
  template void carry_scan_state<T>(const Communicator&, const T*, const T*, const int32_t*, T*, \
                                    int64_t, int64_t, int64_t);                                 \
  template void carry_scan_grad<T>(const Communicator&, const T*, const T*, const int32_t*, T*,  \
                                   int64_t, int64_t, int64_t);
SAMBAY_CP_FLOAT(float)
SAMBAY_CP_FLOAT(double)
#undef SAMBAY_CP_FLOAT
template void gather_sequence<float>(const Communicator&, const float*, float*, int64_t, int64_t,
                                     int64_t);
template void gather_sequence<double>(const Communicator&, const double*, double*, int64_t,
                                      int64_t, int64_t);
template void gather_sequence<int32_t>(const Communicator&, const int32_t*, int32_t*, int64_t,
                                       int64_t, int64_t);

}  // namespace sambay
