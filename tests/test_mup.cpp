#include "optim/mup.h"
#include "core/check.h"
#include "core/philox.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

namespace sambay {
namespace {

constexpr ParamClass kAll[] = {ParamClass::embedding, ParamClass::hidden_matrix,
                               ParamClass::vector};

// Twice the base width, same depth (base_depth 0: no depth transfer): hidden matrices get half
// the learning rate and an init std smaller by sqrt(2); the logits are halved; embedding and
// vectors keep lr 1 and lose weight decay; the residual scale is 1 / sqrt(2 * 8) = 0.25.
TEST(Mup, TwiceTheWidth) {
  const MupConfig c{true, 256, 512, 8};
  EXPECT_DOUBLE_EQ(mup_lr_multiplier(ParamClass::hidden_matrix, c), 0.5);
  EXPECT_DOUBLE_EQ(mup_lr_multiplier(ParamClass::embedding, c), 1.0);
  EXPECT_DOUBLE_EQ(mup_lr_multiplier(ParamClass::vector, c), 1.0);
  EXPECT_DOUBLE_EQ(mup_weight_decay_multiplier(ParamClass::hidden_matrix, c), 1.0);
  EXPECT_DOUBLE_EQ(mup_weight_decay_multiplier(ParamClass::embedding, c), 0.0);
  EXPECT_DOUBLE_EQ(mup_weight_decay_multiplier(ParamClass::vector, c), 0.0);
  EXPECT_DOUBLE_EQ(mup_logit_scale(c), 0.5);
  EXPECT_DOUBLE_EQ(mup_residual_scale(c), 0.25);
  // fan_in 512 (a d -> d projection): 0.02 * sqrt(256 / 512); fan_in 1024 (Mamba out_proj,
  // E = 2d): 0.02 * sqrt(256 / 1024) = 0.01.
  EXPECT_DOUBLE_EQ(mup_init_std(ParamClass::hidden_matrix, 512, c, 0.02), 0.02 / std::sqrt(2.0));
  EXPECT_DOUBLE_EQ(mup_init_std(ParamClass::hidden_matrix, 1024, c, 0.02), 0.01);
  EXPECT_DOUBLE_EQ(mup_init_std(ParamClass::embedding, 512, c, 0.02), 0.02);
  EXPECT_DOUBLE_EQ(mup_init_std(ParamClass::vector, 512, c, 0.02), 0.02);
}

// The base model itself: every multiplier is 1 except the vector weight decay and the residual.
TEST(Mup, BaseModelIsUnscaled) {
  const MupConfig c{true, 1024, 1024, 8, 8};
  for (ParamClass cls : kAll) EXPECT_DOUBLE_EQ(mup_lr_multiplier(cls, c), 1.0);
  EXPECT_DOUBLE_EQ(mup_logit_scale(c), 1.0);
  EXPECT_DOUBLE_EQ(mup_init_std(ParamClass::hidden_matrix, 1024, c, 0.02), 0.02);
  EXPECT_DOUBLE_EQ(mup_residual_scale(c), 1.0 / 4.0);
}

// Width = 128 * depth, base depth 8 (any base: the rule is the same). At depth 32 (4x wider and
// deeper): hidden lr (8/32) * sqrt(8/32) = 0.125, vector lr sqrt(8/32) = 0.5, logits 1/4,
// residual 1 / sqrt(64) = 0.125.
TEST(Mup, DepthTransfer) {
  const MupConfig c{true, 1024, 4096, 32, 8};
  EXPECT_DOUBLE_EQ(mup_lr_multiplier(ParamClass::hidden_matrix, c), 0.125);
  EXPECT_DOUBLE_EQ(mup_lr_multiplier(ParamClass::embedding, c), 0.5);
  EXPECT_DOUBLE_EQ(mup_lr_multiplier(ParamClass::vector, c), 0.5);
  EXPECT_DOUBLE_EQ(mup_logit_scale(c), 0.25);
  EXPECT_DOUBLE_EQ(mup_residual_scale(c), 0.125);
}

TEST(Mup, DisabledIsStandardParameterisation) {
  const MupConfig c{false, 256, 2048, 24, 8};
  for (ParamClass cls : kAll) {
    EXPECT_DOUBLE_EQ(mup_lr_multiplier(cls, c), 1.0);
    EXPECT_DOUBLE_EQ(mup_weight_decay_multiplier(cls, c), 1.0);
    EXPECT_DOUBLE_EQ(mup_init_std(cls, 2048, c, 0.02), 0.02);
  }
  EXPECT_DOUBLE_EQ(mup_logit_scale(c), 1.0);
  EXPECT_DOUBLE_EQ(mup_residual_scale(c), 1.0);
}

TEST(Mup, BadConfigThrows) {
  EXPECT_THROW(mup_logit_scale({true, 0, 512, 8}), Error);
  EXPECT_THROW(mup_residual_scale({true, 256, 512, 0}), Error);
  EXPECT_THROW(mup_lr_multiplier(ParamClass::vector, {true, 256, 512, 8, -1}), Error);
  EXPECT_THROW(mup_init_std(ParamClass::hidden_matrix, 0, {true, 256, 512, 8}, 0.02), Error);
}

// ---- μP++ as ArchScale's SambaY-era code defines it, checked by hand at the paper's depths ----

constexpr const char* kFamilies[] = {"sambay", "sambay-da", "samba-yoco", "transformerpp"};
constexpr int64_t kDepths[] = {8, 12, 16, 20, 24};

// pretrain.py: lr = eta0 sqrt(b / b0) sqrt(d0 / D) for every group, times d0 / D for the hidden
// matrices (d0 = 16); weight decay on the hidden matrices only; model.py: logits times d0 / D,
// residual branches divided by sqrt(2 D), attention scale sqrt(hd0) / head_dim with hd0 = 128.
TEST(MupArchScale, MultipliersAtThePapersDepths) {
  for (const char* family : kFamilies)
    for (int64_t D : kDepths)
      for (const char* tie : {"", "-tied"}) {
        const std::string name = fmt::format("archscale-{}-d{}{}", family, D, tie);
        const ModelConfig c = model_preset(name);
        const MupConfig m = mup_config_for(c);
        ASSERT_TRUE(m.enabled) << name;
        const double ratio = 16.0 / double(D);
        EXPECT_NEAR(mup_lr_multiplier(ParamClass::hidden_matrix, m), ratio * std::sqrt(ratio),
                    1e-15)
            << name;
        for (ParamClass cls : {ParamClass::embedding, ParamClass::vector}) {
          EXPECT_NEAR(mup_lr_multiplier(cls, m), std::sqrt(ratio), 1e-15) << name;
          EXPECT_EQ(mup_weight_decay_multiplier(cls, m), 0.0) << name;
        }
        EXPECT_EQ(mup_weight_decay_multiplier(ParamClass::hidden_matrix, m), 1.0) << name;
        EXPECT_NEAR(mup_logit_scale(m), ratio, 1e-15) << name;
        EXPECT_NEAR(mup_residual_scale(m), 1.0 / std::sqrt(2.0 * double(D)), 1e-15) << name;
        EXPECT_NEAR(mup_attention_scale(m, c.head_dim), std::sqrt(128.0) / 128.0, 1e-15) << name;
        // At D = 24: every learning rate 1.22x below the rule without the depth factor.
        if (D == 24) {
          EXPECT_NEAR(mup_lr_multiplier(ParamClass::vector, m), 1.0 / 1.2247, 1e-4) << name;
        }
      }
}

// The attention scale is sqrt(hd0) / h, equal to 1 / sqrt(h) only at h = hd0.
TEST(MupArchScale, AttentionScaleFollowsTheBaseHeadDim) {
  const MupConfig m{true, 1984, 1984, 16, 16, 128};
  EXPECT_DOUBLE_EQ(mup_attention_scale(m, 128), 1.0 / std::sqrt(128.0));
  EXPECT_DOUBLE_EQ(mup_attention_scale(m, 64), std::sqrt(128.0) / 64.0);
  EXPECT_DOUBLE_EQ(mup_attention_scale(m, 256), std::sqrt(128.0) / 256.0);
  EXPECT_DOUBLE_EQ(mup_attention_scale({true, 1984, 1984, 16, 16, 0}, 64), 1.0 / 8.0);
  EXPECT_DOUBLE_EQ(mup_attention_scale({false, 1984, 1984, 16, 16, 128}, 64), 1.0 / 8.0);
}

// fan_in of a projection from its name and the config, by hand (shapes [out, in]).
int64_t fan_in_by_hand(const std::string& name, const ModelConfig& c, LayerKind kind) {
  const int64_t d = c.d_model, E = 2 * d, R = (d + 15) / 16, Hh = c.n_heads * 128;
  auto ends = [&](const char* suffix) {
    const std::string s = suffix;
    return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
  };
  if (ends("mixer.in_proj.weight") || ends("qkv_proj.weight") || ends("q_proj.weight") ||
      ends("mlp.fc1.weight"))
    return d;
  if (ends("mixer.x_proj.weight")) return E;
  if (ends("mixer.dt_proj.weight")) return R;
  if (ends("mlp.fc2.weight")) return 4 * d;
  if (ends("mixer.out_proj.weight"))
    return kind == LayerKind::mamba || kind == LayerKind::gmu ? E : Hh;
  ADD_FAILURE() << "no fan-in rule for " << name;
  return 1;
}

bool is_output_projection(const std::string& name) {
  return name.find("out_proj.weight") != std::string::npos ||
         name.find("fc2.weight") != std::string::npos;
}

// ArchScale's _init_weights: under μP++ PyTorch's Linear default U(-1/sqrt(fan_in),
// 1/sqrt(fan_in)) (w_init0 = 1), without μP++ N(0, 0.02^2); output projections / sqrt(2 D)
// unless μP++ with an untied head; embedding N(0, 1e-4^2) untied, N(0, 0.02^2) tied; the
// untied readout zero under μP++, N(0, 0.02^2) without.
void expect_archscale_init(const ModelConfig& c, const std::string& what) {
  ParamLayout layout = build_param_layout(c);
  apply_init_rules(layout, c);
  const bool mup = c.mup_base_width > 0, tied = c.tied_embedding;
  const double D = double(c.n_layers());
  int checked = 0;
  for (const ParamSpec& p : layout.params) {
    if (p.cls == ParamClass::hidden_matrix) {
      const LayerKind kind = c.layers[p.layer];
      const double fan_in = double(fan_in_by_hand(p.name, c, kind));
      double scale = mup ? 1.0 / std::sqrt(fan_in) : 0.02;
      if (is_output_projection(p.name) && !(mup && !tied)) scale /= std::sqrt(2.0 * D);
      EXPECT_EQ(p.init, mup ? InitKind::uniform : InitKind::normal) << what << " " << p.name;
      EXPECT_NEAR(p.init_scale, scale, 1e-15) << what << " " << p.name;
      ++checked;
    } else if (p.name == "embedding.weight") {
      EXPECT_EQ(p.init, InitKind::normal) << what;
      EXPECT_EQ(p.init_scale, tied ? 0.02 : 1e-4) << what;
    } else if (p.name == "lm_head.weight") {
      ASSERT_FALSE(tied) << what;
      if (mup) {
        EXPECT_EQ(p.init, InitKind::zeros) << what;
      } else {
        EXPECT_EQ(p.init, InitKind::normal) << what;
        EXPECT_EQ(p.init_scale, 0.02) << what;
      }
    }
  }
  EXPECT_GT(checked, 0) << what;
  EXPECT_EQ(find_param(layout, "lm_head.weight") >= 0, !tied) << what;
}

TEST(MupArchScale, InitScalesAtThePapersDepths) {
  for (const char* family : kFamilies)
    for (int64_t D : kDepths)
      for (const char* tie : {"", "-tied"}) {
        const std::string name = fmt::format("archscale-{}-d{}{}", family, D, tie);
        ModelConfig c = model_preset(name);
        expect_archscale_init(c, name);
        // ArchScale's standard parameterisation (no "mup" in the run name), same init rule.
        c.mup_base_width = c.mup_base_depth = c.mup_base_head_dim = 0;
        expect_archscale_init(c, name + " (SP)");
      }
}

// sambay's own rule is unchanged: N(0, 0.02^2), under μP++ std 0.02 sqrt(base width / fan_in),
// Mamba's dt_proj uniform 1 / sqrt(dt rank), embedding N(0, 0.02^2), no division.
TEST(MupArchScale, NormalRuleIsUnchanged) {
  ModelConfig c = model_preset("sambay-1b");
  c.mup_base_width = 1024;
  ParamLayout layout = build_param_layout(c);
  apply_init_rules(layout, c);
  for (const ParamSpec& p : layout.params) {
    if (p.name.ends_with("dt_proj.weight")) {
      EXPECT_EQ(p.init, InitKind::uniform);
      EXPECT_DOUBLE_EQ(p.init_scale, 1.0 / std::sqrt(128.0));
    } else if (p.cls == ParamClass::hidden_matrix) {
      EXPECT_EQ(p.init, InitKind::normal) << p.name;
      EXPECT_DOUBLE_EQ(p.init_scale, 0.02 * std::sqrt(1024.0 / double(p.shape[1]))) << p.name;
    } else if (p.cls == ParamClass::embedding) {
      EXPECT_EQ(p.init_scale, 0.02);
    }
  }
}

// The values themselves: uniform within its bound with the uniform's std, the readout zero, the
// small embedding. A small model of the ArchScale family (width 8 per layer of depth).
TEST(MupArchScale, InitialValuesFollowTheRules) {
  ModelConfig c = archscale_model("sambay", 8, {.tied = false, .aspect_ratio = 8, .head_dim = 16});
  c.vocab = 1000;
  ParamLayout layout = build_param_layout(c);
  apply_init_rules(layout, c);
  std::vector<double> v(layout.total);
  init_params(layout, v.data(), 11);
  auto stats = [&](const char* name) {
    const ParamSpec& p = layout.params[find_param(layout, name)];
    double sum2 = 0, peak = 0;
    for (int64_t i = p.offset; i < p.offset + p.numel; ++i)
      sum2 += v[i] * v[i], peak = std::max(peak, std::abs(v[i]));
    return std::make_pair(std::sqrt(sum2 / double(p.numel)), peak);
  };
  const double bound = 1.0 / std::sqrt(64.0);  // in_proj: fan_in d = 64
  auto [rms, peak] = stats("layers.0.mixer.in_proj.weight");  // 16384 values
  EXPECT_LE(peak, bound);
  EXPECT_GT(peak, 0.99 * bound);
  EXPECT_NEAR(rms, bound / std::sqrt(3.0), 0.02 * bound);
  auto [emb_rms, emb_peak] = stats("embedding.weight");
  EXPECT_NEAR(emb_rms, 1e-4, 3e-6);
  EXPECT_EQ(stats("lm_head.weight").second, 0.0);
}

TEST(MupArchScale, ParameterGroupsNameLrWeightDecayAndInit) {
  const ModelConfig c = model_preset("archscale-sambay-d24");
  ParamLayout layout = build_param_layout(c);
  apply_init_rules(layout, c);
  const std::vector<std::string> lines = describe_param_groups(layout, mup_config_for(c), 4e-4, 0.1);
  auto find = [&](const std::string& what) {
    for (const std::string& l : lines)
      if (l.find(what) != std::string::npos) return l;
    return std::string();
  };
  // Hidden: 4e-4 (16/24)^1.5 = 2.177e-4, decayed; vectors, embedding and readout:
  // 4e-4 sqrt(16/24) = 3.266e-4, not decayed.
  const std::string in_proj = find("layers.*.mixer.in_proj.weight");
  EXPECT_NE(in_proj.find("lr 2.177e-04"), std::string::npos) << in_proj;
  EXPECT_NE(in_proj.find("wd 0.1"), std::string::npos) << in_proj;
  EXPECT_NE(in_proj.find(fmt::format("uniform bound {:.4g}", 1 / std::sqrt(2976.0))),
            std::string::npos)
      << in_proj;
  const std::string head = find("lm_head.weight");
  EXPECT_NE(head.find("lr 3.266e-04"), std::string::npos) << head;
  EXPECT_NE(head.find("wd 0 "), std::string::npos) << head;
  EXPECT_NE(head.find("zeros"), std::string::npos) << head;
  EXPECT_NE(find("embedding.weight").find("normal std 0.0001"), std::string::npos);
  int64_t values = 0;
  for (const std::string& l : lines) {
    const size_t at = l.find('[');
    values += std::llround(std::stod(l.substr(at + 1)) * 1e6);
  }
  EXPECT_NEAR(double(values), double(layout.total), 1e-3 * double(layout.total));  // 4 digits
}

}  // namespace
}  // namespace sambay
