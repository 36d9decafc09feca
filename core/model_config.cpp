#include "core/model_config.h"

#include "core/check.h"
#include "core/size_limits.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <sstream>

namespace sambay {

namespace {

struct KindName {
  LayerKind kind;
  const char* name;
};
constexpr KindName kKindNames[] = {{LayerKind::mamba, "mamba"},
                                   {LayerKind::sliding_window, "sliding_window"},
                                   {LayerKind::full_attention, "full_attention"},
                                   {LayerKind::cross_attention, "cross_attention"},
                                   {LayerKind::gmu, "gmu"}};

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Phi4-mini-Flash widths for width d (docs/model.md, "Presets"), used by the depth-scaled
// family too.
void set_mamba_widths(ModelConfig& c) {
  c.d_inner = 2 * c.d_model;
  c.d_state = 16;
  c.d_conv = 4;
  c.dt_rank = ceil_div(c.d_model, 16);
}

ModelConfig phi4_mini_flash() {
  ModelConfig c;
  c.name = "phi4-mini-flash";
  c.d_model = 2560;
  c.vocab = 200064;
  c.n_heads = 40;
  c.n_kv_heads = 20;
  c.head_dim = 64;
  c.window = 512;
  c.differential = true;
  c.d_ff = 10240;
  set_mamba_widths(c);
  c.eod_token = 199999;
  set_sambay_pattern(c, 32, /*gmu=*/true);
  return c;
}

// The Phi4-flavoured depth family (Phi4-mini-Flash's vocabulary, LayerNorm, attention biases,
// window 512): width 128 per layer of depth, head dim 128, H = depth, GQA ratio 2, F = 4d,
// E = 2d. depth 16 gives the ~1B model (1.0B without the 200K-token embedding). The paper's
// own scaling family is archscale_model.
ModelConfig scaled_by_depth(const std::string& name, int64_t depth, bool differential) {
  ModelConfig c;
  c.name = name;
  c.d_model = 128 * depth;
  c.vocab = 200064;
  c.n_heads = depth;
  c.n_kv_heads = depth / 2;
  c.head_dim = 128;
  c.window = 512;
  c.differential = differential;
  c.d_ff = 4 * c.d_model;
  set_mamba_widths(c);
  c.eod_token = 199999;
  set_sambay_pattern(c, depth, /*gmu=*/true);
  return c;
}

void make_transformerpp(ModelConfig& c) {
  c.layers.assign(c.layers.size(), LayerKind::full_attention);
  c.kv_source_layer = -1;
  c.memory_layer = -1;
  c.differential = false;
  c.attention_bias = false;
  c.rope = true;
  c.norm = NormKind::rmsnorm;
  c.d_inner = c.d_state = c.dt_rank = 0;
}

// Tiny shapes for whole-model gradient checks: every layer kind appears, sizes are odd where
// the ops allow, and the window is shorter than test sequences.
ModelConfig tiny(const std::string& name) {
  ModelConfig c;
  c.name = name;
  c.d_model = 12;
  c.vocab = 29;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 3;
  c.window = 3;
  c.differential = true;
  c.d_ff = 10;
  c.d_inner = 14;
  c.d_state = 3;
  c.d_conv = 4;
  c.dt_rank = 2;
  set_sambay_pattern(c, 8, /*gmu=*/true);
  return c;
}

// The SambaY paper's scaling families (ArchScale's lit_gpt/config.py at the paper's release):
// see archscale_model in the header.
constexpr const char* kArchScaleFamilies[] = {"sambay", "sambay-da", "samba-yoco", "transformerpp"};
constexpr int64_t kArchScaleDepths[] = {8, 12, 16, 20, 24};

// Differential attention splits key/value heads into pairs: the even divisor of `heads` nearest
// to `wanted` (the larger one on a tie).
int64_t even_divisor_nearest(int64_t heads, int64_t wanted) {
  int64_t best = 0;
  for (int64_t g = 2; g <= heads; g += 2)
    if (heads % g == 0 && (best == 0 || std::abs(g - wanted) <= std::abs(best - wanted))) best = g;
  return best;
}

ModelConfig demo() {
  ModelConfig c;
  c.name = "demo-sambay-da";
  c.d_model = 128;
  c.vocab = 257;  // the byte tokenizer's 256 bytes + end-of-document
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 32;
  c.window = 64;
  c.differential = true;
  c.d_ff = 384;
  set_mamba_widths(c);
  c.eod_token = 256;
  set_sambay_pattern(c, 8, /*gmu=*/true);
  return c;
}

}  // namespace

const char* layer_kind_name(LayerKind k) {
  for (const auto& kn : kKindNames)
    if (kn.kind == k) return kn.name;
  return "?";
}

LayerKind parse_layer_kind(const std::string& s) {
  for (const auto& kn : kKindNames)
    if (s == kn.name) return kn.kind;
  fail("unknown layer kind '{}' (valid: mamba, sliding_window, full_attention, cross_attention, "
       "gmu)",
       s);
}

void set_sambay_pattern(ModelConfig& c, int64_t n, bool gmu) {
  SAMBAY_CHECK(n >= 4 && n % 4 == 0, "the SambaY pattern needs a multiple of 4 layers, got {}", n);
  const int64_t half = n / 2;
  c.layers.clear();
  for (int64_t i = 0; i < half; ++i)
    c.layers.push_back(i % 2 == 0 ? LayerKind::mamba : LayerKind::sliding_window);
  c.layers.push_back(LayerKind::mamba);
  c.layers.push_back(LayerKind::full_attention);
  for (int64_t i = half + 2; i < n; ++i)
    c.layers.push_back(gmu && i % 2 == 0 ? LayerKind::gmu : LayerKind::cross_attention);
  c.memory_layer = gmu ? static_cast<int>(half) : -1;
  c.kv_source_layer = static_cast<int>(half + 1);
}

const char* archscale_family_names() { return "sambay, sambay-da, samba-yoco, transformerpp"; }

int64_t archscale_aspect_ratio(const std::string& family) {
  if (family == "sambay" || family == "sambay-da") return 124;
  if (family == "samba-yoco") return 126;
  if (family == "transformerpp") return 128;
  fail("unknown ArchScale family '{}' (valid: {})", family, archscale_family_names());
}

ModelConfig archscale_model(const std::string& family, int64_t depth,
                            const ArchScaleShape& s) {
  const int64_t family_ar = archscale_aspect_ratio(family);  // also checks the name
  const int64_t ar = s.aspect_ratio > 0 ? s.aspect_ratio : family_ar;
  SAMBAY_CHECK(depth >= 4 && depth % 4 == 0,
               "ArchScale's {} family needs a depth that is a multiple of 4 (its layer pattern and "
               "D / 4 key/value heads), got {}",
               family, depth);
  SAMBAY_CHECK(s.aspect_ratio >= 0 && s.head_dim > 0 && s.base_depth > 0 && s.base_head_dim > 0,
               "ArchScale shape: aspect ratio {}, head dim {}, base depth {} and base head dim {} "
               "must be positive",
               s.aspect_ratio, s.head_dim, s.base_depth, s.base_head_dim);
  ModelConfig c;
  c.name = fmt::format("archscale-{}-d{}{}", family, depth, s.tied ? "-tied" : "");
  c.d_model = ar * depth;
  c.vocab = 32000;
  c.eod_token = 2;
  c.n_heads = depth;
  c.n_kv_heads = depth / 4;
  c.head_dim = s.head_dim;
  c.window = 128;
  c.d_ff = 4 * c.d_model;
  c.attention_bias = false;
  c.norm = NormKind::rmsnorm;
  c.norm_eps = 1e-5;
  c.tied_embedding = s.tied;
  c.init = InitRule::archscale;
  c.mup_base_width = ar * s.base_depth;
  c.mup_base_depth = s.base_depth;
  c.mup_base_head_dim = s.base_head_dim;
  if (family == "transformerpp") {
    c.layers.assign(depth, LayerKind::full_attention);
    c.rope = true;
    c.rope_theta = 10000;
    return c;
  }
  set_mamba_widths(c);
  set_sambay_pattern(c, depth, /*gmu=*/family != "samba-yoco");
  if (family == "sambay-da") {
    c.differential = true;
    c.n_kv_heads = even_divisor_nearest(depth, depth / 4);
  }
  return c;
}

std::vector<std::string> model_preset_names() {
  std::vector<std::string> names = {
      "phi4-mini-flash", "sambay-da-1b",   "sambay-1b",       "samba-yoco-1b",
      "transformerpp-1b", "tiny-sambay-da", "tiny-sambay",    "tiny-samba-yoco",
      "tiny-transformerpp", "tiny-ngmu",    "demo-sambay-da"};
  for (const char* family : kArchScaleFamilies)
    for (int64_t depth : kArchScaleDepths)
      for (const char* tie : {"", "-tied"})
        names.push_back(fmt::format("archscale-{}-d{}{}", family, depth, tie));
  return names;
}

ModelConfig model_preset(const std::string& name) {
  for (const char* family : kArchScaleFamilies)
    for (int64_t depth : kArchScaleDepths)
      for (bool tied : {false, true})
        if (name == fmt::format("archscale-{}-d{}{}", family, depth, tied ? "-tied" : ""))
          return archscale_model(family, depth, {.tied = tied});
  if (name == "phi4-mini-flash") return phi4_mini_flash();
  if (name == "sambay-da-1b") return scaled_by_depth(name, 16, true);
  if (name == "sambay-1b") return scaled_by_depth(name, 16, false);
  if (name == "samba-yoco-1b") {
    ModelConfig c = scaled_by_depth(name, 16, false);
    set_sambay_pattern(c, 16, /*gmu=*/false);
    return c;
  }
  if (name == "transformerpp-1b") {
    ModelConfig c = scaled_by_depth(name, 16, false);
    make_transformerpp(c);
    return c;
  }
  if (name == "tiny-sambay-da") return tiny(name);
  if (name == "tiny-sambay") {
    ModelConfig c = tiny(name);
    c.differential = false;
    return c;
  }
  if (name == "tiny-samba-yoco") {
    ModelConfig c = tiny(name);
    c.differential = false;
    set_sambay_pattern(c, 8, /*gmu=*/false);
    return c;
  }
  if (name == "tiny-transformerpp") {
    ModelConfig c = tiny(name);
    c.layers.resize(4);
    c.head_dim = 4;  // RoPE needs an even head dim
    make_transformerpp(c);
    return c;
  }
  if (name == "tiny-ngmu") {
    ModelConfig c = tiny(name);
    c.normalized_gmu = true;
    return c;
  }
  if (name == "demo-sambay-da") return demo();
  std::string names;
  for (const auto& n : model_preset_names()) names += (names.empty() ? "" : ", ") + n;
  fail("unknown model preset '{}' (valid: {})", name, names);
}

void validate_model_config(const ModelConfig& c, const std::string& src) {
  auto need = [&](bool ok, const char* field, const std::string& why) {
    if (!ok) fail("{}: model.{}: {}", src, field, why);
  };
  need(c.d_model > 0, "d_model", fmt::format("must be positive, got {}", c.d_model));
  need(c.vocab > 0, "vocab", fmt::format("must be positive, got {}", c.vocab));
  need(!c.layers.empty(), "layers", "the layer pattern is empty");
  need(c.d_ff > 0, "d_ff", fmt::format("must be positive, got {}", c.d_ff));
  need(std::isfinite(c.norm_eps) && c.norm_eps > 0 && c.norm_eps < 1, "norm_eps",
       fmt::format("must be in (0, 1), got {}", c.norm_eps));
  need(std::isfinite(c.rope_theta) && c.rope_theta > 1, "rope_theta",
       fmt::format("must be a finite number above 1, got {}", c.rope_theta));
  const std::pair<const char*, int64_t> sizes[] = {
      {"d_model", c.d_model}, {"vocab", c.vocab},       {"n_heads", c.n_heads},
      {"n_kv_heads", c.n_kv_heads}, {"head_dim", c.head_dim}, {"window", c.window},
      {"d_inner", c.d_inner}, {"d_state", c.d_state},   {"d_conv", c.d_conv},
      {"dt_rank", c.dt_rank}, {"d_ff", c.d_ff},         {"mup_base_width", c.mup_base_width},
      {"mup_base_depth", c.mup_base_depth}, {"mup_base_head_dim", c.mup_base_head_dim}};
  for (const auto& [field, value] : sizes)
    need(value <= kMaxModelDimension, field,
         fmt::format("must be at most {} (token ids and per-dimension indices are 32-bit), got {}",
                     kMaxModelDimension, value));
  need(c.n_layers() <= 1000000, "layers", fmt::format("{} layers; at most 1000000", c.n_layers()));
  bool any_attention = false, any_mamba = false, any_cross = false, any_gmu = false;
  for (LayerKind k : c.layers) {
    any_attention |= k == LayerKind::sliding_window || k == LayerKind::full_attention ||
                     k == LayerKind::cross_attention;
    any_mamba |= k == LayerKind::mamba;
    any_cross |= k == LayerKind::cross_attention;
    any_gmu |= k == LayerKind::gmu;
  }
  if (any_attention) {
    need(c.n_heads > 0 && c.n_kv_heads > 0 && c.head_dim > 0, "n_heads",
         "attention layers need n_heads, n_kv_heads and head_dim > 0");
    need(c.n_heads % c.n_kv_heads == 0, "n_kv_heads",
         fmt::format("n_heads {} is not a multiple of n_kv_heads {}", c.n_heads, c.n_kv_heads));
    if (c.differential)
      need(c.n_heads % 2 == 0 && c.n_kv_heads % 2 == 0, "differential",
           "differential attention pairs heads: n_heads and n_kv_heads must be even");
    if (c.rope) need(c.head_dim % 2 == 0, "head_dim", "RoPE needs an even head_dim");
    // The cross-decoder's queries are not rotated (the graph rotates a layer's own q and k), so
    // they would meet the kv-source layer's rotated keys at the wrong relative positions.
    if (c.rope)
      need(!any_cross, "rope",
           "RoPE with cross-attention layers is not supported: their queries are not rotated");
  }
  for (size_t i = 0; i < c.layers.size(); ++i)
    if (c.layers[i] == LayerKind::sliding_window)
      need(c.window > 0, "window", "sliding-window layers need window > 0");
  if (any_mamba || any_gmu) need(c.d_inner > 0, "d_inner", "Mamba and GMU layers need d_inner > 0");
  if (any_mamba) {
    need(c.d_state > 0, "d_state", "Mamba layers need d_state > 0");
    need(c.d_conv > 0, "d_conv", "Mamba layers need d_conv > 0");
    need(c.dt_rank > 0, "dt_rank", "Mamba layers need dt_rank > 0");
  }
  const int n = static_cast<int>(c.layers.size());
  if (any_cross) {
    need(c.kv_source_layer >= 0 && c.kv_source_layer < n, "kv_source_layer",
         fmt::format("cross-attention layers need a kv source layer in [0, {}), got {}", n,
                     c.kv_source_layer));
    LayerKind src = c.layers[c.kv_source_layer];
    need(src == LayerKind::full_attention || src == LayerKind::sliding_window, "kv_source_layer",
         fmt::format("layer {} is {}, not an attention layer", c.kv_source_layer,
                     layer_kind_name(src)));
  }
  if (any_gmu) {
    need(c.memory_layer >= 0 && c.memory_layer < n, "memory_layer",
         fmt::format("GMU layers need a memory layer in [0, {}), got {}", n, c.memory_layer));
    need(c.layers[c.memory_layer] == LayerKind::mamba, "memory_layer",
         fmt::format("layer {} is {}, not mamba", c.memory_layer,
                     layer_kind_name(c.layers[c.memory_layer])));
  }
  for (int i = 0; i < n; ++i) {
    if (c.layers[i] == LayerKind::cross_attention)
      need(i > c.kv_source_layer, "layers",
           fmt::format("cross-attention layer {} comes before its kv source layer {}", i,
                       c.kv_source_layer));
    if (c.layers[i] == LayerKind::gmu)
      need(i > c.memory_layer, "layers",
           fmt::format("GMU layer {} comes before its memory layer {}", i, c.memory_layer));
  }
  need(c.mup_base_width >= 0, "mup_base_width", "must be >= 0 (0 disables muP++)");
  need(c.mup_base_depth >= 0, "mup_base_depth", "must be >= 0 (0: no depth transfer of the lr)");
  need(c.mup_base_head_dim >= 0, "mup_base_head_dim",
       "must be >= 0 (0: attention scores scaled by 1 / sqrt(head_dim))");
  // Without muP++ these would silently do nothing.
  need(c.mup_base_width > 0 || c.mup_base_depth == 0, "mup_base_depth",
       fmt::format("is {} but muP++ is off (mup_base_width = 0): set it to 0 too, or enable muP++",
                   c.mup_base_depth));
  need(c.mup_base_width > 0 || c.mup_base_head_dim == 0, "mup_base_head_dim",
       fmt::format("is {} but muP++ is off (mup_base_width = 0): set it to 0 too, or enable muP++",
                   c.mup_base_head_dim));
  need(c.init_multiplier > 0 && std::isfinite(c.init_multiplier), "init_multiplier",
       fmt::format("must be positive, got {}", c.init_multiplier));
  // fp32 weights, gradients and the two AdamW moments: 16 bytes per parameter.
  const double params = parameter_count_estimate(c);
  if (!(params * 16 <= kMaxPlannedBytes)) {
    const auto& widest = *std::max_element(
        std::begin(sizes), std::end(sizes),
        [](const auto& a, const auto& b) { return a.second < b.second; });
    need(false, widest.first,
         fmt::format("{} = {} makes {:.3g} parameters ({:.3g} bytes of weights, gradients and "
                     "AdamW moments), beyond the 2^62 bytes that sizes are planned in",
                     widest.first, widest.second, params, params * 16));
  }
}

namespace {

// The parameter count in the arithmetic type Num (int64_t for the count, double for the check).
template <typename Num>
Num parameter_count_in(const ModelConfig& c) {
  const Num d = c.d_model, E = c.d_inner, N = c.d_state, R = c.dt_rank, K = c.d_conv;
  const Num Hh = Num(c.n_heads) * c.head_dim, Gh = Num(c.n_kv_heads) * c.head_dim;
  const Num bias = c.attention_bias ? 1 : 0;
  const Num norm = c.norm == NormKind::layernorm ? 2 * d : d;
  const Num diff = c.differential ? Num(4) * c.head_dim + Num(2) * c.head_dim : 0;
  // Embedding (and an untied readout), final norm.
  Num total = Num(c.vocab) * d * (c.tied_embedding ? 1 : 2) + norm;
  for (LayerKind k : c.layers) {
    total += 2 * norm + 3 * d * c.d_ff;  // two norms + SwiGLU MLP (fc1: d -> 2F, fc2: F -> d)
    switch (k) {
      case LayerKind::mamba:
        total += d * 2 * E + E * K + E + E * (R + 2 * N) + R * E + E + E * N + E + E * d;
        break;
      case LayerKind::sliding_window:
      case LayerKind::full_attention:
        total += d * (Hh + 2 * Gh) + bias * (Hh + 2 * Gh) + Hh * d + bias * d + diff;
        break;
      case LayerKind::cross_attention:
        total += d * Hh + bias * Hh + Hh * d + bias * d + diff;
        break;
      case LayerKind::gmu:
        total += 2 * d * E + (c.normalized_gmu ? E : Num(0));
        break;
    }
  }
  return total;
}

}  // namespace

int64_t parameter_count(const ModelConfig& c) { return parameter_count_in<int64_t>(c); }
double parameter_count_estimate(const ModelConfig& c) { return parameter_count_in<double>(c); }

int64_t non_embedding_parameter_count(const ModelConfig& c) {
  return parameter_count(c) - c.vocab * c.d_model * (c.tied_embedding ? 1 : 2);
}

const char* init_rule_name(InitRule r) { return r == InitRule::normal ? "normal" : "archscale"; }

namespace {

// One field of the text form: how to print it and how to parse it.
struct Field {
  const char* key;
  std::function<std::string(const ModelConfig&)> get;
  std::function<void(ModelConfig&, const std::string&)> set;
};

int64_t parse_int(const std::string& v) {
  int64_t x = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
  if (ec != std::errc() || end != v.data() + v.size()) fail("'{}' is not an integer", v);
  return x;
}

double parse_double(const std::string& v) {
  size_t used = 0;
  double x = 0;
  try {
    x = std::stod(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != v.size()) fail("'{}' is not a number", v);
  return x;
}

bool parse_bool(const std::string& v) {
  if (v == "true" || v == "1" || v == "yes" || v == "on") return true;
  if (v == "false" || v == "0" || v == "no" || v == "off") return false;
  fail("'{}' is not a boolean (true/false)", v);
}

std::string layers_text(const std::vector<LayerKind>& layers) {
  std::string s;
  for (LayerKind k : layers) {
    if (!s.empty()) s += ',';
    s += layer_kind_name(k);
  }
  return s;
}

std::vector<LayerKind> parse_layers(const std::string& v) {
  std::vector<LayerKind> out;
  std::stringstream ss(v);
  std::string item;
  while (std::getline(ss, item, ',')) {
    while (!item.empty() && item.front() == ' ') item.erase(item.begin());
    while (!item.empty() && item.back() == ' ') item.pop_back();
    out.push_back(parse_layer_kind(item));
  }
  return out;
}

#define INT_FIELD(name)                                                       \
  Field {                                                                     \
    #name, [](const ModelConfig& c) { return std::to_string(c.name); },       \
        [](ModelConfig& c, const std::string& v) { c.name = parse_int(v); } \
  }
#define BOOL_FIELD(name)                                                               \
  Field {                                                                              \
    #name, [](const ModelConfig& c) { return std::string(c.name ? "true" : "false"); }, \
        [](ModelConfig& c, const std::string& v) { c.name = parse_bool(v); }           \
  }

const std::vector<Field>& fields() {
  static const std::vector<Field> f = {
      {"name", [](const ModelConfig& c) { return c.name; },
       [](ModelConfig& c, const std::string& v) { c.name = v; }},
      INT_FIELD(d_model),
      INT_FIELD(vocab),
      {"layers", [](const ModelConfig& c) { return layers_text(c.layers); },
       [](ModelConfig& c, const std::string& v) { c.layers = parse_layers(v); }},
      INT_FIELD(n_heads),
      INT_FIELD(n_kv_heads),
      INT_FIELD(head_dim),
      INT_FIELD(window),
      BOOL_FIELD(differential),
      BOOL_FIELD(attention_bias),
      BOOL_FIELD(rope),
      {"rope_theta", [](const ModelConfig& c) { return fmt::format("{}", c.rope_theta); },
       [](ModelConfig& c, const std::string& v) { c.rope_theta = parse_double(v); }},
      INT_FIELD(d_inner),
      INT_FIELD(d_state),
      INT_FIELD(d_conv),
      INT_FIELD(dt_rank),
      INT_FIELD(d_ff),
      BOOL_FIELD(normalized_gmu),
      {"norm",
       [](const ModelConfig& c) {
         return std::string(c.norm == NormKind::layernorm ? "layernorm" : "rmsnorm");
       },
       [](ModelConfig& c, const std::string& v) {
         if (v == "layernorm")
           c.norm = NormKind::layernorm;
         else if (v == "rmsnorm")
           c.norm = NormKind::rmsnorm;
         else
           fail("'{}' is not a norm (layernorm, rmsnorm)", v);
       }},
      {"norm_eps", [](const ModelConfig& c) { return fmt::format("{}", c.norm_eps); },
       [](ModelConfig& c, const std::string& v) { c.norm_eps = parse_double(v); }},
      INT_FIELD(kv_source_layer),
      INT_FIELD(memory_layer),
      INT_FIELD(mup_base_width),
      INT_FIELD(mup_base_depth),
      INT_FIELD(mup_base_head_dim),
      BOOL_FIELD(tied_embedding),
      {"init", [](const ModelConfig& c) { return std::string(init_rule_name(c.init)); },
       [](ModelConfig& c, const std::string& v) {
         if (v == "normal")
           c.init = InitRule::normal;
         else if (v == "archscale")
           c.init = InitRule::archscale;
         else
           fail("'{}' is not an init rule (normal, archscale)", v);
       }},
      {"init_multiplier", [](const ModelConfig& c) { return fmt::format("{}", c.init_multiplier); },
       [](ModelConfig& c, const std::string& v) { c.init_multiplier = parse_double(v); }},
      INT_FIELD(eod_token),
  };
  return f;
}

#undef INT_FIELD
#undef BOOL_FIELD

}  // namespace

std::vector<std::pair<std::string, std::string>> model_config_fields(const ModelConfig& c) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const Field& f : fields()) out.emplace_back(f.key, f.get(c));
  return out;
}

void set_model_config_field(ModelConfig& c, const std::string& key, const std::string& value,
                            const std::string& source) {
  for (const Field& f : fields()) {
    if (key != f.key) continue;
    try {
      f.set(c, value);
    } catch (const Error& e) {
      fail("{}: model.{}: {}", source, key, e.what());
    }
    return;
  }
  std::string keys;
  for (const Field& f : fields()) keys += (keys.empty() ? "" : ", ") + std::string(f.key);
  fail("{}: unknown model field 'model.{}' (valid: {})", source, key, keys);
}

std::string model_config_to_text(const ModelConfig& c) {
  std::string s;
  for (const auto& [k, v] : model_config_fields(c)) s += fmt::format("model.{} = {}\n", k, v);
  return s;
}

}  // namespace sambay
