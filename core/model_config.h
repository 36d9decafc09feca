// Model configurations as data: the layer pattern, widths, and which layers feed the
// cross-decoder's keys/values and the GMUs' memory (model.md).
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

  // muP++ (model.md): base width for learning-rate/logit scaling; 0 disables muP++.
  int64_t mup_base_width = 0;

  int32_t eod_token = -1;  // end of document / bos / pad, informational

  int64_t n_layers() const { return static_cast<int64_t>(layers.size()); }
};

// Named presets: phi4-mini-flash, sambay-1b, sambay-da-1b, samba-yoco-1b, transformerpp-1b,
// and small ones for tests and the demo (tiny-sambay-da, tiny-sambay, tiny-samba-yoco,
// tiny-transformerpp, demo-sambay-da). Throws listing the names for an unknown one.
ModelConfig model_preset(const std::string& name);
std::vector<std::string> model_preset_names();

// Checks every field and cross-field rule; errors name the field (and `source`, e.g. a file).
void validate_model_config(const ModelConfig& c, const std::string& source);

// SambaY-family pattern for n layers: a self-decoder of alternating Mamba / sliding-window
// layers for the first half, then one Mamba memory layer, one full-attention kv layer, and a
// cross-decoder alternating GMU / cross-attention (model.md, layers 0-31 for n = 32).
// `gmu` = false gives Samba+YOCO (cross-attention only in the cross-decoder).
void set_sambay_pattern(ModelConfig& c, int64_t n_layers, bool gmu);

// Exact parameter count (computed from shapes, nothing allocated).
int64_t parameter_count(const ModelConfig& c);
// The same count in double precision, which cannot wrap around: what size checks compare
// before the exact count of a config is formed.
double parameter_count_estimate(const ModelConfig& c);

// Every integer size field (d_model, vocab, widths, heads, window, ...) is at most this: token
// ids and the kernels' per-dimension indices are 32-bit.
constexpr int64_t kMaxModelDimension = 2147483647;

// The config as `key = value` fields (the names the CLI and config files use after "model.",
// e.g. "d_model", "layers"), in a fixed order; and setting one field from text. Setting rejects
// an unknown key or an unparsable value with a message naming `source` and the key.
std::vector<std::pair<std::string, std::string>> model_config_fields(const ModelConfig& c);
void set_model_config_field(ModelConfig& c, const std::string& key, const std::string& value,
                            const std::string& source);
// All fields as "model.key = value" lines (run directories, checkpoints).
std::string model_config_to_text(const ModelConfig& c);

}  // namespace sambay
