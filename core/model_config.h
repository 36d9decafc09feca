// Model configurations as data: the layer pattern, widths, and which layers feed the
// cross-decoder's keys/values and the GMUs' memory (docs/model.md, "Layer patterns").
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace sambay {

enum class LayerKind {
  mamba,            // Mamba-1 mixer
  sliding_window,   // causal attention over the last `window` tokens
  full_attention,   // causal attention over all earlier tokens
  cross_attention,  // own queries, keys/values from the kv-source layer
  gmu,              // gated memory unit reading the memory layer's scan output
};

enum class NormKind { layernorm, rmsnorm };

// How projections, the embedding and an untied readout are initialised (optim/mup.h
// apply_init_rules has the formulas):
//   normal     sambay's own: N(0, 0.02^2) everywhere (under muP++ the projections' std is
//              0.02 sqrt(mup_base_width / fan_in)); an untied readout like the embedding;
//   archscale  ArchScale's SambaY-era _init_weights: PyTorch's Linear default under muP++ (and
//              N(0, 0.02^2) without), output projections divided by sqrt(2 layers) unless the
//              head is untied under muP++, a small embedding and a zero readout when untied.
enum class InitRule { normal, archscale };

const char* layer_kind_name(LayerKind k);
LayerKind parse_layer_kind(const std::string& s);  // throws listing the valid names

struct ModelConfig {
  std::string name;
  int64_t d_model = 0;
  int64_t vocab = 0;
  std::vector<LayerKind> layers;

  // Attention.
  int64_t n_heads = 0;     // H, query heads
  int64_t n_kv_heads = 0;  // G, key/value heads
  int64_t head_dim = 0;    // h
  int64_t window = 0;      // sliding-window width w
  bool differential = false;
  bool attention_bias = true;  // bias on qkv and output projections
  bool rope = false;           // rotary embedding on q and k (Transformer++)
  double rope_theta = 10000.0;

  // Mamba.
  int64_t d_inner = 0;  // E
  int64_t d_state = 0;  // N
  int64_t d_conv = 4;   // conv kernel
  int64_t dt_rank = 0;  // R

  // MLP (SwiGLU).
  int64_t d_ff = 0;  // F

  bool normalized_gmu = false;  // nGMU: RMSNorm over E before the GMU's output projection
  NormKind norm = NormKind::layernorm;
  double norm_eps = 1e-5;

  // Layer whose keys/values the cross-attention layers reuse, and the Mamba layer whose
  // pre-gate scan output is the GMU memory; -1 when the pattern has none.
  int kv_source_layer = -1;
  int memory_layer = -1;

  // muP++ (optim/mup.h): the base model the hyperparameters were tuned on. mup_base_width > 0
  // enables muP++ (hidden-matrix lr and logits scaled by base width / width, residual branches
  // by 1 / sqrt(2 layers)); mup_base_depth > 0 adds the depth rule (every lr times
  // sqrt(base depth / layers)); mup_base_head_dim > 0 scales attention scores by
  // sqrt(base head dim) / head_dim instead of 1 / sqrt(head_dim). The last two need the first.
  int64_t mup_base_width = 0;
  int64_t mup_base_depth = 0;
  int64_t mup_base_head_dim = 0;

  // The output head: tied to the embedding, or its own readout matrix lm_head.weight [vocab, d].
  bool tied_embedding = true;
  InitRule init = InitRule::normal;
  double init_multiplier = 1.0;  // every projection's init scale times this (ArchScale's w_init0)

  int32_t eod_token = -1;  // end of document / bos / pad, informational

  int64_t n_layers() const { return static_cast<int64_t>(layers.size()); }
};

// Named presets: phi4-mini-flash, the Phi4-flavoured depth-16 family (sambay-1b, sambay-da-1b,
// samba-yoco-1b, transformerpp-1b), the paper's scaling families as ArchScale defines them
// (archscale-<family>-d<D> with an untied head, archscale-<family>-d<D>-tied, D = 8 ... 24),
// and small ones for tests and the demo (tiny-sambay-da, tiny-sambay, tiny-samba-yoco,
// tiny-transformerpp, tiny-ngmu, demo-sambay-da). Throws listing the names for an unknown one.
ModelConfig model_preset(const std::string& name);
std::vector<std::string> model_preset_names();

// The SambaY paper's scaling families as ArchScale's SambaY-era lit_gpt/config.py defines them,
// at depth D (a multiple of 4): width ar D (ar: archscale_aspect_ratio), D query heads of dim
// 128, D / 4 key/value heads, sliding window 128, MLP width 4d, Mamba E = 2d, N 16, dt rank
// ceil(d / 16), RMSNorm (eps 1e-5), no biases, no RoPE except Transformer++ (theta 10000),
// vocabulary 32000 (Llama-2, end of document 2), untied head unless `tied`. muP++ on with
// pretrain.py's base d0 = 16 and hd0 = 128 (base width ar d0), and ArchScale's init.
// family: sambay, sambay-da, samba-yoco, transformerpp. SambaY+DA pairs key/value heads: where
// D / 4 is odd (D = 12, 20) it takes the even divisor of D nearest to D / 4 (the larger on a
// tie: 4 for both), since ArchScale's own config there cannot run its differential attention.
// The options change the shape for studies at other scales (a tiny CPU sweep): the
// preset's values are the defaults. Throws naming the bad argument.
struct ArchScaleShape {
  bool tied = false;
  int64_t aspect_ratio = 0;  // width per layer of depth; 0: the family's
  int64_t head_dim = 128;
  int64_t base_depth = 16;      // muP++ d0 (base width = aspect ratio x d0)
  int64_t base_head_dim = 128;  // muP++ hd0
};
ModelConfig archscale_model(const std::string& family, int64_t depth,
                            const ArchScaleShape& shape = {});
// Width per layer of depth: 124 (sambay, sambay-da), 126 (samba-yoco), 128 (transformerpp).
int64_t archscale_aspect_ratio(const std::string& family);
// "sambay, sambay-da, samba-yoco, transformerpp"
const char* archscale_family_names();

// Checks every field and cross-field rule; errors name the field (and `source`, e.g. a file).
void validate_model_config(const ModelConfig& c, const std::string& source);

// SambaY-family pattern for n layers: a self-decoder of alternating Mamba / sliding-window
// layers for the first half, then one Mamba memory layer, one full-attention kv layer, and a
// cross-decoder alternating GMU / cross-attention (docs/model.md, "Layer patterns").
// `gmu` = false gives Samba+YOCO (cross-attention only in the cross-decoder).
void set_sambay_pattern(ModelConfig& c, int64_t n_layers, bool gmu);

// Exact parameter count (computed from shapes, nothing allocated); an untied readout counts.
int64_t parameter_count(const ModelConfig& c);
// The same count in double precision, which cannot wrap around: what size checks compare
// before the exact count of a config is formed.
double parameter_count_estimate(const ModelConfig& c);

// Every integer size field (d_model, vocab, widths, heads, window, ...) is at most this: token
// ids and the kernels' per-dimension indices are 32-bit.
constexpr int64_t kMaxModelDimension = 2147483647;

// The parameters outside the embedding and the readout (what 6 N T counts).
int64_t non_embedding_parameter_count(const ModelConfig& c);

const char* init_rule_name(InitRule r);

// The config as `key = value` fields (the names the CLI and config files use after "model.",
// e.g. "d_model", "layers"), in a fixed order; and setting one field from text. Setting rejects
// an unknown key or an unparsable value with a message naming `source` and the key.
std::vector<std::pair<std::string, std::string>> model_config_fields(const ModelConfig& c);
void set_model_config_field(ModelConfig& c, const std::string& key, const std::string& value,
                            const std::string& source);
// All fields as "model.key = value" lines (run directories, checkpoints).
std::string model_config_to_text(const ModelConfig& c);

}  // namespace sambay
