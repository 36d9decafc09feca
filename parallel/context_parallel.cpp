#include "parallel/context_parallel.h"

#include <algorithm>
#include <vector>

namespace sambay {

namespace {

// Where chunk j lives: its rank, and the run (0 or 1) of that rank.
struct ChunkHome {
  int rank, s;
};
ChunkHome home_of(int64_t j, int cp) {
  return j < cp ? ChunkHome{int(j), 0} : ChunkHome{int(2 * cp - 1 - j), 1};
}

// Chunk j of sample b starts a new document (so no state crosses into it).
bool starts_document(const int32_t* doc_whole, int64_t b, int64_t j, int64_t L, int64_t h) {
  return doc_whole && doc_whole[b * L + j * h] != doc_whole[b * L + j * h - 1];
}

// Every rank's [2B, n] block, gathered: [cp, 2B, n].
template <typename T>
std::vector<T> gather_blocks(const Communicator& cp, const T* mine, int64_t count) {
  std::vector<T> all(count * cp.size);
  all_gather(cp, mine, all.data(), count, dtype_of<T>());
  return all;
}

}  // namespace

template <typename T>
void take_context_chunks(const T* whole, T* local, int64_t B, int64_t L, int rank, int cp) {
  const int64_t h = L / (2 * cp);
  for (int64_t b = 0; b < B; ++b)
    for (int s = 0; s < 2; ++s)
      std::copy_n(whole + b * L + chunk_of(rank, s, cp) * h, h, local + (2 * b + s) * h);
}

template <typename T>
void gather_sequence(const Communicator& cp, const T* local, T* whole, int64_t B, int64_t h,
                     int64_t w) {
  const int64_t block = 2 * B * h * w, L = 2 * cp.size * h;
  const std::vector<T> all = gather_blocks(cp, local, block);
  for (int r = 0; r < cp.size; ++r)
    for (int64_t b = 0; b < B; ++b)
      for (int s = 0; s < 2; ++s)
        std::copy_n(all.data() + r * block + (2 * b + s) * h * w, h * w,
                    whole + (b * L + chunk_of(r, s, cp.size) * h) * w);
}

template <typename T>
void reduce_scatter_sequence_add(const Communicator& cp, const T* whole, T* local, int64_t B,
                                 int64_t h, int64_t w) {
  const int64_t block = 2 * B * h * w, L = 2 * cp.size * h;
  std::vector<T> blocks(block * cp.size), mine(block);  // block r: rank r's chunks
  for (int r = 0; r < cp.size; ++r)
    for (int64_t b = 0; b < B; ++b)
      for (int s = 0; s < 2; ++s)
        std::copy_n(whole + (b * L + chunk_of(r, s, cp.size) * h) * w, h * w,
                    blocks.data() + r * block + (2 * b + s) * h * w);
  reduce_scatter(cp, blocks.data(), mine.data(), block, dtype_of<T>(), ReduceOp::sum);
  for (int64_t i = 0; i < block; ++i) local[i] += mine[i];
}

template <typename T>
void previous_halo(const Communicator& cp, const T* local, T* halo, int64_t B, int64_t h,
                   int64_t w, int64_t k) {
  const int64_t runs = 2 * B, block = runs * k * w;
  std::vector<T> tails(block);
  for (int64_t p = 0; p < runs; ++p)
    std::copy_n(local + (p * h + h - k) * w, k * w, tails.data() + p * k * w);
  const std::vector<T> all = gather_blocks(cp, tails.data(), block);
  for (int64_t b = 0; b < B; ++b)
    for (int s = 0; s < 2; ++s) {
      T* dst = halo + (2 * b + s) * k * w;
      const int64_t j = chunk_of(cp.rank, s, cp.size);
      if (j == 0) {
        std::fill_n(dst, k * w, T(0));
        continue;
      }
      const ChunkHome prev = home_of(j - 1, cp.size);
      std::copy_n(all.data() + prev.rank * block + (2 * b + prev.s) * k * w, k * w, dst);
    }
}

template <typename T>
void return_halo_grad(const Communicator& cp, const T* dhalo, T* dlocal, int64_t B, int64_t h,
                      int64_t w, int64_t k) {
  const int64_t block = 2 * B * k * w;
  const std::vector<T> all = gather_blocks(cp, dhalo, block);
  for (int64_t b = 0; b < B; ++b)
    for (int s = 0; s < 2; ++s) {
      const int64_t j = chunk_of(cp.rank, s, cp.size);
      if (j + 1 == 2 * cp.size) continue;
      const ChunkHome next = home_of(j + 1, cp.size);
      const T* from = all.data() + next.rank * block + (2 * b + next.s) * k * w;
      T* dst = dlocal + ((2 * b + s) * h + h - k) * w;
      for (int64_t i = 0; i < k * w; ++i) dst[i] += from[i];
    }
}

template <typename T>
void carry_scan_state(const Communicator& cp, const T* state_out, const T* decay,
                      const int32_t* doc_whole, T* state_in, int64_t B, int64_t h, int64_t S) {
  const int64_t block = 2 * B * S, L = 2 * cp.size * h;
  const std::vector<T> outs = gather_blocks(cp, state_out, block);
  const std::vector<T> decays = gather_blocks(cp, decay, block);
  for (int64_t b = 0; b < B; ++b)
    for (int s = 0; s < 2; ++s) {
      T* st = state_in + (2 * b + s) * S;
      std::fill_n(st, S, T(0));
      for (int64_t j = 1; j <= chunk_of(cp.rank, s, cp.size); ++j) {  // st: entering j-1 -> j
        if (starts_document(doc_whole, b, j, L, h)) {
          std::fill_n(st, S, T(0));
          continue;
        }
        const ChunkHome prev = home_of(j - 1, cp.size);
        const int64_t at = prev.rank * block + (2 * b + prev.s) * S;
        for (int64_t i = 0; i < S; ++i) st[i] = outs[at + i] + decays[at + i] * st[i];
      }
    }
}

template <typename T>
void carry_scan_grad(const Communicator& cp, const T* dstate_in_local, const T* decay,
                     const int32_t* doc_whole, T* dstate_out, int64_t B, int64_t h, int64_t S) {
  const int64_t block = 2 * B * S, L = 2 * cp.size * h, chunks = 2 * cp.size;
  const std::vector<T> locals = gather_blocks(cp, dstate_in_local, block);
  const std::vector<T> decays = gather_blocks(cp, decay, block);
  for (int64_t b = 0; b < B; ++b)
    for (int s = 0; s < 2; ++s) {
      T* g = dstate_out + (2 * b + s) * S;
      std::fill_n(g, S, T(0));
      // g: the gradient arriving at chunk j's final state -> at chunk j-1's.
      for (int64_t j = chunks - 1; j > chunk_of(cp.rank, s, cp.size); --j) {
        if (starts_document(doc_whole, b, j, L, h)) {
          std::fill_n(g, S, T(0));
          continue;
        }
        const ChunkHome home = home_of(j, cp.size);
        const int64_t at = home.rank * block + (2 * b + home.s) * S;
        for (int64_t i = 0; i < S; ++i) g[i] = locals[at + i] + decays[at + i] * g[i];
      }
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
#define SAMBAY_CP_ANY(T)                                                                       \
  template void take_context_chunks<T>(const T*, T*, int64_t, int64_t, int, int);              \
  template void gather_sequence<T>(const Communicator&, const T*, T*, int64_t, int64_t, int64_t);
SAMBAY_CP_ANY(float)
SAMBAY_CP_ANY(double)
SAMBAY_CP_ANY(int32_t)
#undef SAMBAY_CP_ANY

}  // namespace sambay
