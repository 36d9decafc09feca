// Cross-entropy through the output head, computed over vocabulary chunks so that the [n, V]
// logits never exist in fp32: logits[i, v] = logit_scale * <h[i], w[v]>.
//   h [n, d] (the final norm's output), w [V, d] (the head's weight: the embedding table when the
//   head is tied), targets [n] with target < 0 meaning "ignore this position"; lse [n] saved for
//   backward (unused rows: 0). chunk: vocabulary rows per GEMM; any chunk >= 1 gives the same
//   result (on the GPU up to the rounding of the GEMMs, whose shapes change with it).
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/bf16.h"
#include "core/cuda_stream.h"

namespace sambay {

// How the CPU reference treats each logit: exactly (the CPU model), or rounded to bf16 as the
// CUDA path stores it (the reference of the GPU tests: the loss of the stored logits).
enum class LogitRounding { exact, bf16 };

// Returns the SUM over valid rows of -log softmax(logits[i])[targets[i]] (in double), and the
// number of valid rows in *valid_rows (skipped when null). Throws naming the row if a target is
// >= V.
template <typename T>
double tied_cross_entropy_forward(const T* h, const T* w, const int32_t* targets, T* lse,
                                  int64_t n, int64_t d, int64_t V, T logit_scale, int64_t chunk,
                                  int64_t* valid_rows,
                                  LogitRounding rounding = LogitRounding::exact);

// Adds grad_scale * d(sum loss)/dh into dh and grad_scale * d(sum loss)/dw into dw
// (grad_scale = 1 / valid tokens of the whole batch gives the mean loss's gradient).
// Null gradient pointers are skipped.
template <typename T>
void tied_cross_entropy_backward(const T* h, const T* w, const int32_t* targets, const T* lse,
                                 T* dh, T* dw, int64_t n, int64_t d, int64_t V, T logit_scale,
                                 int64_t chunk, T grad_scale,
                                 LogitRounding rounding = LogitRounding::exact);

// ---- CUDA ----
// h, w bf16 (w: the bf16 compute copy); targets int32 on the device; lse fp32.
//
// The vocabulary is cut into chunks of `chunk` rows (the last one may be shorter). Chunk c's
// logits come from one cuBLASLt GEMM, bf16 out with fp32 accumulation (alpha = logit_scale), into
// a bf16 slot [n, min(chunk, V)] of the workspace. The first `kept_chunks` chunks each have a slot of
// their own that holds the logits from forward to backward; the others share one slot, and the
// backward recomputes their logits with the same GEMM (same shape, leading dimension and
// alignment, hence the same bits). So the loss and every gradient are bit-identical whatever
// kept_chunks is: it only trades memory for the backward's logits GEMMs.
//
// Forward, per chunk: the GEMM, then one block per row folds the chunk's stored bf16 values into
// the row's running (max, sum of exp) in fp32 and picks up the target's logit; the loss is
// exactly that of the stored logits. A final single-block kernel forms lse and adds the row
// losses in double, in a fixed order.
// Backward, per chunk (in vocabulary order): the GEMM again for a chunk not kept; one block per
// row turns the slot in place into the bf16 gradient G = grad_scale logit_scale (softmax -
// onehot); then dh_f32 (=, then +=) G w_chunk (fp32 [n, d] in the workspace, added into dh once
// at the end, so dh is rounded once) and dw_chunk += G^T h (fp32, beta = 1).
//
// FLOPs: 2 n V d forward; 4 n V d backward, plus 2 n d per vocabulary row of a chunk not kept.
// Bytes beyond the GEMMs' operands: the forward's GEMMs write 2 bytes per logit (overlapped with
// their math) and the row kernel reads them back (2 n V); the backward's gradient pass reads and
// writes 2 bytes per logit (4 n V), and a chunk not kept is written once more by its GEMM; the
// fp32 dh is 12 n d. At n 8192, V 200064, d 2560: 3.3 GB read forward (0.8 ms at 4 TB/s) and
// 6.6 GB backward (1.6 ms), against 2 n V d = 8.4 TFLOP per GEMM, about 11 ms each at 780
// TFLOP/s: the passes cost about 7% of the three GEMMs, so the loss reaches about 93% of the
// GEMMs' own rate when nothing else is lost.
struct CrossEntropyPlan {
  int64_t n = 0, d = 0, V = 0;
  int64_t chunk = 8192;     // vocabulary rows per GEMM
  int64_t kept_chunks = 0;  // chunks whose logits stay from forward to backward, 0 .. chunks
};

// ceil(V / chunk): the number of vocabulary chunks.
int64_t cross_entropy_chunks(const CrossEntropyPlan& plan);

// The workspace's parts, as byte offsets from its start (each 256-byte aligned): the kept slots,
// the shared slot of the recomputed chunks (absent when every chunk is kept), the per-row
// forward state (running max, running sum, target logit, fp32 [n] each) and the forward's result,
// and the backward's fp32 dh [n, d] (absent when dh is never asked for: plan it anyway, the
// bytes are n d 4). `bytes` is the whole.
struct CrossEntropyWorkspace {
  size_t slot_bytes = 0;  // one [n, chunk] bf16 slot, rounded up to 256 bytes
  size_t kept = 0, shared = 0, row_max = 0, row_sum = 0, target_logit = 0, result = 0, dh = 0;
  size_t bytes = 0;
};
// Throws on a bad plan (shape, chunk < 1, kept_chunks outside [0, chunks]).
CrossEntropyWorkspace cross_entropy_workspace(const CrossEntropyPlan& plan);

// workspace: cross_entropy_workspace(plan).bytes of device memory, 256-byte aligned; the forward
// writes the kept logits there, and the backward that follows must get the same workspace, its
// kept slots untouched in between. Returns the loss sum and *valid_rows (copied back: this
// SYNCHRONISES the stream). Throws naming the first row whose target is >= V (checked on the
// device during the same pass).
double tied_cross_entropy_forward_cuda(const bf16* h, const bf16* w, const int32_t* targets,
                                       float* lse, const CrossEntropyPlan& plan,
                                       float logit_scale, void* workspace, int64_t* valid_rows,
                                       cudaStream_t stream);

// dh (bf16) += grad_scale * d(sum loss)/dh, dw (fp32) += grad_scale * d(sum loss)/dw, from the
// forward's lse and workspace (see the top). The kept logits are consumed (turned into the
// gradient): one backward per forward. Does not synchronise. Targets >= V are not re-checked (the
// forward throws on them). Null gradient pointers are skipped (both null: nothing is done).
void tied_cross_entropy_backward_cuda(const bf16* h, const bf16* w, const int32_t* targets,
                                      const float* lse, bf16* dh, float* dw,
                                      const CrossEntropyPlan& plan, float logit_scale,
                                      float grad_scale, void* workspace, cudaStream_t stream);

}  // namespace sambay
