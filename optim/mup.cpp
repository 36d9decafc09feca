#include "optim/mup.h"

#include "core/check.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <regex>
#include <tuple>

namespace sambay {

namespace {

constexpr double kStd = 0.02;                 // GPT-2's N(0, 0.02^2)
constexpr double kSmallEmbeddingStd = 1e-4;   // ArchScale's untied embedding

void check_config(const MupConfig& c) {
  SAMBAY_CHECK(c.base_width >= 1 && c.width >= 1 && c.depth >= 1 && c.base_depth >= 0 &&
                   c.base_head_dim >= 0,
               "bad μP++ config: base_width {} width {} depth {} base_depth {} base_head_dim {}",
               c.base_width, c.width, c.depth, c.base_depth, c.base_head_dim);
}

double width_ratio(const MupConfig& c) { return double(c.base_width) / double(c.width); }

double depth_lr_factor(const MupConfig& c) {
  return c.base_depth == 0 ? 1.0 : std::sqrt(double(c.base_depth) / double(c.depth));
}

}  // namespace

MupConfig mup_config_for(const ModelConfig& model) {
  return {model.mup_base_width > 0, model.mup_base_width,    model.d_model,
          model.n_layers(),         model.mup_base_depth,    model.mup_base_head_dim};
}

double mup_lr_multiplier(ParamClass cls, const MupConfig& c) {
  if (!c.enabled) return 1.0;
  check_config(c);
  const double width_factor = cls == ParamClass::hidden_matrix ? width_ratio(c) : 1.0;
  return width_factor * depth_lr_factor(c);
}

double mup_weight_decay_multiplier(ParamClass cls, const MupConfig& c) {
  if (!c.enabled) return 1.0;
  check_config(c);
  return cls == ParamClass::hidden_matrix ? 1.0 : 0.0;
}

double mup_init_std(ParamClass cls, int64_t fan_in, const MupConfig& c, double base_std) {
  if (!c.enabled || cls != ParamClass::hidden_matrix) return base_std;
  check_config(c);
  SAMBAY_CHECK(fan_in >= 1, "μP++ init: fan_in must be >= 1, got {}", fan_in);
  return base_std * std::sqrt(double(c.base_width) / double(fan_in));
}

double mup_logit_scale(const MupConfig& c) {
  if (!c.enabled) return 1.0;
  check_config(c);
  return width_ratio(c);
}

double mup_residual_scale(const MupConfig& c) {
  if (!c.enabled) return 1.0;
  check_config(c);
  return 1.0 / std::sqrt(2.0 * double(c.depth));
}

double mup_attention_scale(const MupConfig& c, int64_t head_dim) {
  SAMBAY_CHECK(head_dim >= 1, "attention scale: head_dim must be >= 1, got {}", head_dim);
  const double h = double(head_dim);
  if (!c.enabled || c.base_head_dim == 0) return 1.0 / std::sqrt(h);
  check_config(c);
  return std::sqrt(double(c.base_head_dim)) / h;
}

void apply_init_rules(ParamLayout& layout, const ModelConfig& model) {
  const MupConfig mup = mup_config_for(model);
  const bool archscale = model.init == InitRule::archscale;
  const bool untied = !model.tied_embedding;
  const double w0 = model.init_multiplier;
  const double layers = double(model.n_layers());
  for (ParamSpec& p : layout.params) {
    if (p.cls == ParamClass::hidden_matrix) {
      const int64_t fan_in = p.shape[1];
      if (!archscale) {
        // dt_proj keeps Mamba's uniform rule under sambay's own init.
        if (p.init == InitKind::normal) p.init_scale = w0 * mup_init_std(p.cls, fan_in, mup, kStd);
        continue;
      }
      if (mup.enabled) {
        p.init = InitKind::uniform, p.init_scale = w0 / std::sqrt(double(fan_in));
      } else {
        p.init = InitKind::normal, p.init_scale = w0 * kStd;
      }
      if (p.output_projection && !(mup.enabled && untied))
        p.init_scale /= std::sqrt(2.0 * layers);
    } else if (p.offset == layout.embedding) {
      p.init = InitKind::normal;
      p.init_scale = archscale && untied ? kSmallEmbeddingStd : kStd;
    } else if (p.offset == layout.readout) {
      if (archscale && mup.enabled) {
        p.init = InitKind::zeros, p.init_scale = 0;
      } else {
        p.init = InitKind::normal, p.init_scale = archscale ? w0 * kStd : kStd;
      }
    }
  }
}

std::string describe_init(const ParamSpec& p) {
  switch (p.init) {
    case InitKind::normal:
      return fmt::format("normal std {:.4g}", p.init_scale);
    case InitKind::uniform:
      return fmt::format("uniform bound {:.4g}", p.init_scale);
    case InitKind::ones:
      return "ones";
    case InitKind::zeros:
      return "zeros";
    case InitKind::mamba_a_log:
      return "Mamba A_log = log(1..N)";
    case InitKind::mamba_dt_bias:
      return "Mamba dt bias (softplus^-1 of log-uniform [1e-3, 1e-1])";
  }
  return "?";
}

std::vector<std::string> describe_param_groups(const ParamLayout& layout, const MupConfig& mup,
                                               double peak_lr, double weight_decay) {
  // Key: (lr multiplier, weight-decay multiplier, init); first appearance decides the order.
  using Key = std::tuple<double, double, std::string>;
  struct Group {
    int order;
    int64_t values = 0;
    std::vector<std::string> names;
  };
  std::map<Key, Group> groups;
  static const std::regex layer_index(R"(^layers\.[0-9]+\.)");
  for (const ParamSpec& p : layout.params) {
    const Key key{mup_lr_multiplier(p.cls, mup), mup_weight_decay_multiplier(p.cls, mup),
                  describe_init(p)};
    Group& g = groups.try_emplace(key, Group{int(groups.size()), 0, {}}).first->second;
    g.values += p.numel;
    const std::string name = std::regex_replace(p.name, layer_index, "layers.*.");
    if (std::find(g.names.begin(), g.names.end(), name) == g.names.end()) g.names.push_back(name);
  }
  std::vector<std::pair<int, std::string>> lines;
  for (const auto& [key, g] : groups) {
    const auto& [lr_mult, wd_mult, init] = key;
    std::string names;
    for (const std::string& n : g.names) names += (names.empty() ? "" : ", ") + n;
    lines.emplace_back(
        g.order, fmt::format("lr {:.3e} (x{:.4g})  wd {:.3g}  init {}  [{:.4g}M values]: {}",
                             peak_lr * lr_mult, lr_mult, weight_decay * wd_mult, init,
                             g.values / 1e6, names));
  }
  std::sort(lines.begin(), lines.end());
  std::vector<std::string> out;
  for (auto& [order, line] : lines) out.push_back(std::move(line));
  return out;
}

}  // namespace sambay
