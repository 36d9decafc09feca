// Whole-model tests: parameter counts, the fp64 finite-difference check of every parameter
// tensor for each architecture, recompute equivalence, and masking properties.
#include "core/model.h"
#include "tests/test_util.h"

#include <fmt/format.h>

#include <cmath>

namespace sambay {
namespace {

TEST(ModelConfig, Phi4MiniFlashParameterCountMatchesModelSpec) {
  const ModelConfig c = model_preset("phi4-mini-flash");
  validate_model_config(c, "preset");
  // docs/model.md ("Presets"): embedding 512.2M, 32 MLPs 2516.6M, 9 Mamba 41.2M each,
  // 9 self-attention 19.7M each, 7 cross-attention 13.1M each, 7 GMU 26.2M each. Exactly,
  // with norms:
  //   embedding 200064*2560                         =   512,163,840
  //   norms 32*2*(2*2560) + final 2*2560            =       332,800
  //   MLPs 32*(2560*20480 + 10240*2560)             = 2,516,582,400
  //   Mamba 9*41,241,600 (in 26.2M, conv 25.6K, x 983K, dt 824K, A 81.9K, D 5.1K, out 13.1M)
  //                                                 =   371,174,400
  //   self-attention 9*(2560*5120+5120 + 2560*2560+2560 + 4*64+128) = 177,019,776
  //   cross-attention 7*(2*(2560*2560+2560) + 384)  =    91,788,928
  //   GMU 7*(2*2560*5120)                           =   183,500,800
  EXPECT_EQ(parameter_count(c), 3'852'562'944);
  int mamba = 0, swa = 0, full = 0, cross = 0, gmu = 0;
  for (LayerKind k : c.layers) {
    mamba += k == LayerKind::mamba, swa += k == LayerKind::sliding_window;
    full += k == LayerKind::full_attention, cross += k == LayerKind::cross_attention;
    gmu += k == LayerKind::gmu;
  }
  EXPECT_EQ(mamba, 9);
  EXPECT_EQ(swa, 8);
  EXPECT_EQ(full, 1);
  EXPECT_EQ(cross, 7);
  EXPECT_EQ(gmu, 7);
  EXPECT_EQ(c.memory_layer, 16);
  EXPECT_EQ(c.kv_source_layer, 17);
  EXPECT_EQ(c.layers[18], LayerKind::gmu);
  EXPECT_EQ(c.layers[19], LayerKind::cross_attention);
  EXPECT_EQ(c.layers[1], LayerKind::sliding_window);
}

TEST(ModelConfig, OneBillionParameterCount) {
  // sambay-da-1b: d 2048, 16 layers (5 Mamba, 4 SWA, 1 full, 3 cross, 3 GMU), E 4096, N 16,
  // R 128, H 16, G 8, h 128, F 8192, vocab 200064:
  //   embedding 409,731,072; norms 16*8192 + 4096 = 135,168; MLPs 16*50,331,648 = 805,306,368
  //   Mamba 5*(16,777,216 + 16,384+4,096 + 655,360 + 528,384 + 65,536 + 4,096 + 8,388,608)
  //     = 5*26,439,680 = 132,198,400
  //   self-attention 5*(2048*4096+4096 + 2048*2048+2048 + 4*128+256) = 5*12,589,824 = 62,949,120
  //   cross 3*(2*(2048*2048+2048) + 768) = 3*8,393,472 = 25,180,416
  //   GMU 3*2*2048*4096 = 50,331,648
  EXPECT_EQ(parameter_count(model_preset("sambay-da-1b")),
            409'731'072 + 135'168 + 805'306'368 + 132'198'400 + 62'949'120 + 25'180'416 +
                50'331'648);
}

TEST(ModelConfig, LayoutMatchesCountForEveryPreset) {
  for (const std::string& name : model_preset_names()) {
    const ModelConfig c = model_preset(name);
    validate_model_config(c, name);
    const ParamLayout layout = build_param_layout(c);
    EXPECT_EQ(layout.total, parameter_count(c)) << name;
    int64_t sum = 0;
    for (const ParamSpec& p : layout.params) {
      EXPECT_EQ(p.offset, sum) << p.name;
      sum += p.numel;
    }
    EXPECT_EQ(sum, layout.total) << name;
  }
}

// The paper's scaling families against ArchScale's SambaY-era lit_gpt/config.py, by hand:
//   transformer_d{D}: ar 128, n_head D, head 128 (n_embd / n_head), n_query_groups D / 4, RoPE;
//   sambay_d{D} / sambayda_d{D} (use_da): ar 124, samba_yoco ("sambayoco") ar 126: head_dim 128,
//   n_query_groups D / 4, local_window 128, rnn_per_layer 2 (Mamba), yoco, gmu_yoco (not for
//   sambayoco), nope; all: mlp_expand 4, vocab 32000 (padding 64), FusedRMSNorm eps 1e-5, no
//   biases (bias, attn_bias, attn_out_bias False), Mamba d_state 16, d_conv 4, expand 2,
//   dt_rank ceil(d / 16), tied_embed False unless the run name has "_tie".
TEST(ModelConfig, ArchScalePresetsAreThePapersFamilies) {
  struct Family {
    const char* name;
    int64_t ar;
    bool gmu, differential, transformer;
  };
  const Family families[] = {{"sambay", 124, true, false, false},
                             {"sambay-da", 124, true, true, false},
                             {"samba-yoco", 126, false, false, false},
                             {"transformerpp", 128, false, false, true}};
  for (const Family& f : families)
    for (int64_t D : {8, 12, 16, 20, 24})
      for (bool tied : {false, true}) {
        const std::string name = fmt::format("archscale-{}-d{}{}", f.name, D, tied ? "-tied" : "");
        const ModelConfig c = model_preset(name);
        validate_model_config(c, name);
        const int64_t d = f.ar * D;
        EXPECT_EQ(c.name, name);
        EXPECT_EQ(c.d_model, d) << name;
        EXPECT_EQ(c.n_layers(), D) << name;
        EXPECT_EQ(c.n_heads, D) << name;
        EXPECT_EQ(c.head_dim, 128) << name;
        // SambaY+DA pairs key/value heads: D / 4 = 3 and 5 (odd) become 4.
        EXPECT_EQ(c.n_kv_heads, f.differential && (D / 4) % 2 ? 4 : D / 4) << name;
        EXPECT_EQ(c.differential, f.differential) << name;
        EXPECT_EQ(c.d_ff, 4 * d) << name;
        EXPECT_EQ(c.vocab, 32000) << name;
        EXPECT_EQ(c.eod_token, 2) << name;
        EXPECT_EQ(c.norm, NormKind::rmsnorm) << name;
        EXPECT_EQ(c.norm_eps, 1e-5) << name;
        EXPECT_FALSE(c.attention_bias) << name;
        EXPECT_EQ(c.rope, f.transformer) << name;
        EXPECT_EQ(c.tied_embedding, tied) << name;
        EXPECT_EQ(c.init, InitRule::archscale) << name;
        EXPECT_EQ(c.mup_base_width, f.ar * 16) << name;
        EXPECT_EQ(c.mup_base_depth, 16) << name;
        EXPECT_EQ(c.mup_base_head_dim, 128) << name;
        EXPECT_FALSE(c.normalized_gmu) << name;
        if (f.transformer) {
          EXPECT_EQ(c.layers, std::vector<LayerKind>(D, LayerKind::full_attention)) << name;
          EXPECT_EQ(c.rope_theta, 10000) << name;
          continue;
        }
        EXPECT_EQ(c.window, 128) << name;
        EXPECT_EQ(c.d_inner, 2 * d) << name;
        EXPECT_EQ(c.d_state, 16) << name;
        EXPECT_EQ(c.d_conv, 4) << name;
        EXPECT_EQ(c.dt_rank, (d + 15) / 16) << name;
        // Blocks: Mamba at the self-decoder's even layers and at D / 2 (the memory), sliding
        // window at its odd layers, full attention at D / 2 + 1 (the shared keys/values), then
        // GMU (even) / cross-attention (odd), or cross-attention only for Samba+YOCO.
        for (int64_t i = 0; i < D; ++i) {
          LayerKind want;
          if (i < D / 2) want = i % 2 == 0 ? LayerKind::mamba : LayerKind::sliding_window;
          else if (i == D / 2) want = LayerKind::mamba;
          else if (i == D / 2 + 1) want = LayerKind::full_attention;
          else want = f.gmu && i % 2 == 0 ? LayerKind::gmu : LayerKind::cross_attention;
          EXPECT_EQ(c.layers[i], want) << name << " layer " << i;
        }
        EXPECT_EQ(c.kv_source_layer, D / 2 + 1) << name;
        EXPECT_EQ(c.memory_layer, f.gmu ? D / 2 : -1) << name;
      }
}

// The untied head adds vocab x d parameters; ArchScale's N(D) = mult(ar) D^3 of its budget rule
// (pretrain.py) approximates the non-embedding count: within 5% for every family and depth (the
// largest gap, 4.6%, is Samba+YOCO at depth 8; its formula's lower-order terms are not exact).
TEST(ModelConfig, UntiedHeadCountsAndArchScaleParameterRule) {
  for (const char* family : {"sambay", "sambay-da", "samba-yoco", "transformerpp"})
    for (int64_t D : {8, 12, 16, 20, 24}) {
      const ModelConfig untied = model_preset(fmt::format("archscale-{}-d{}", family, D));
      const ModelConfig tied = model_preset(fmt::format("archscale-{}-d{}-tied", family, D));
      EXPECT_EQ(parameter_count(untied) - parameter_count(tied), 32000 * untied.d_model);
      EXPECT_EQ(non_embedding_parameter_count(untied), non_embedding_parameter_count(tied));
      const double ar = double(untied.d_model / D);
      const std::string f = family;
      const double mult = f == "transformerpp" ? 14.5 * ar * ar
                          : f == "samba-yoco"  ? 13.5 * ar * ar + 208 * ar
                                               : 14.5 * ar * ar + 144 * ar;
      const double n = mult * double(D * D * D);
      EXPECT_NEAR(double(non_embedding_parameter_count(untied)) / n, 1.0, 0.05) << family << D;
      const ParamLayout layout = build_param_layout(untied);
      EXPECT_EQ(layout.readout, layout.total - 32000 * untied.d_model);
      EXPECT_EQ(output_head_offset(layout), layout.readout);
      EXPECT_EQ(output_head_offset(build_param_layout(tied)), 0);
    }
}

// An untied head changes no offset of the tied model's tensors (checkpoints of tied models keep
// their layout), and the new fields default to the behaviour before they existed.
TEST(ModelConfig, TiedLayoutIsUnchangedByTheNewFields) {
  for (const char* preset : {"phi4-mini-flash", "sambay-da-1b", "tiny-sambay-da"}) {
    ModelConfig c = model_preset(preset);
    EXPECT_TRUE(c.tied_embedding);
    EXPECT_EQ(c.init, InitRule::normal);
    EXPECT_EQ(c.init_multiplier, 1.0);
    EXPECT_EQ(c.mup_base_depth, 0);
    EXPECT_EQ(c.mup_base_head_dim, 0);
    const ParamLayout tied = build_param_layout(c);
    c.tied_embedding = false;
    const ParamLayout untied = build_param_layout(c);
    ASSERT_EQ(untied.params.size(), tied.params.size() + 1);
    for (size_t i = 0; i < tied.params.size(); ++i) {
      EXPECT_EQ(untied.params[i].name, tied.params[i].name);
      EXPECT_EQ(untied.params[i].offset, tied.params[i].offset);
    }
    EXPECT_EQ(untied.params.back().name, "lm_head.weight");
    EXPECT_EQ(tied.readout, -1);
  }
}

TEST(ModelConfig, ValidationNamesTheField) {
  ModelConfig c = model_preset("tiny-sambay-da");
  c.n_kv_heads = 3;
  try {
    validate_model_config(c, "run.ini");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("run.ini: model.n_kv_heads"), std::string::npos)
        << e.what();
  }
  c = model_preset("tiny-sambay-da");
  c.memory_layer = 1;  // a sliding-window layer
  EXPECT_THROW(validate_model_config(c, "x"), Error);
  EXPECT_THROW(set_model_config_field(c, "d_model", "12x", "cli"), Error);
  EXPECT_THROW(set_model_config_field(c, "no_such_field", "1", "cli"), Error);
  EXPECT_THROW(set_model_config_field(c, "layers", "mamba,attention", "cli"), Error);
  EXPECT_THROW(set_model_config_field(c, "init", "xavier", "cli"), Error);
  EXPECT_THROW(set_model_config_field(c, "tied_embedding", "maybe", "cli"), Error);
  // muP++'s depth and head-dim rules without muP++ would do nothing: refused, naming the field.
  for (const char* field : {"mup_base_depth", "mup_base_head_dim"}) {
    c = model_preset("tiny-sambay-da");
    set_model_config_field(c, field, "16", "cli");
    try {
      validate_model_config(c, "run.ini");
      FAIL() << "expected an error for " << field;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("run.ini: model.") + field),
                std::string::npos)
          << e.what();
    }
    set_model_config_field(c, "mup_base_width", "12", "cli");
    validate_model_config(c, "run.ini");
  }
  c = model_preset("tiny-sambay-da");
  c.init_multiplier = 0;
  EXPECT_THROW(validate_model_config(c, "x"), Error);
  // RoPE on a pattern with cross-attention layers would leave their queries unrotated.
  c = model_preset("tiny-sambay-da");
  c.rope = true;
  c.head_dim = 4;  // even, as RoPE needs
  try {
    validate_model_config(c, "run.ini");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("run.ini: model.rope"), std::string::npos) << e.what();
  }
}

TEST(ModelConfig, TextFieldsRoundTrip) {
  for (const char* preset : {"phi4-mini-flash", "archscale-sambay-da-d12", "archscale-transformerpp-d8-tied"}) {
    ModelConfig a = model_preset(preset);
    a.init_multiplier = 0.75;
    ModelConfig b;
    for (const auto& [k, v] : model_config_fields(a)) set_model_config_field(b, k, v, "roundtrip");
    EXPECT_EQ(model_config_to_text(a), model_config_to_text(b));
    EXPECT_EQ(parameter_count(a), parameter_count(b));
  }
}

struct Batch {
  int64_t B, L;
  std::vector<int32_t> tokens, targets, doc;
};

Batch random_batch(const ModelConfig& c, int64_t B, int64_t L, uint64_t seed, bool with_docs) {
  Batch b{B, L, {}, {}, {}};
  for (int64_t i = 0; i < B * L; ++i) {
    b.tokens.push_back(static_cast<int32_t>(philox_below(seed, 1, i, c.vocab)));
    // Every fifth target ignored, to exercise the mask.
    b.targets.push_back(i % 5 == 3 ? -1 : static_cast<int32_t>(philox_below(seed, 2, i, c.vocab)));
    // Documents: row b splits after position 2 + b (so rows differ).
    b.doc.push_back(with_docs ? static_cast<int32_t>((i % L) > 2 + i / L) : 0);
  }
  if (!with_docs) b.doc.clear();
  return b;
}

// Random perturbation of every parameter so that no gradient path is hidden behind exact
// ones and zeros of the initialisation.
template <typename T>
void perturb(Model<T>& m, uint64_t seed, double scale) {
  std::vector<double> noise(m.params.size());
  fill_normal(noise.data(), static_cast<int64_t>(noise.size()), 0.0, scale, seed, 99);
  for (size_t i = 0; i < noise.size(); ++i) m.params[i] += static_cast<T>(noise[i]);
}

struct GradCase {
  std::string preset;
  bool docs;
  bool scaled;  // residual, logit and attention scales other than 1 (muP++ paths)
  bool untied = false;  // the output head as its own readout matrix
};

// The presets of the gradient checks, and "tiny-archscale-<family>": ArchScale's family (core's
// archscale_model, μP++ on, its init) at depth 8 shrunk to 2 channels per layer of depth and
// head dim 2 (scores scaled by sqrt(hd0 = 4) / 2 = 1, not 1 / sqrt(2)), vocabulary 29.
ModelConfig grad_case_config(const GradCase& gc) {
  ModelConfig c;
  const std::string tiny_archscale = "tiny-archscale-";
  if (gc.preset.rfind(tiny_archscale, 0) == 0) {
    c = archscale_model(gc.preset.substr(tiny_archscale.size()), 8,
                        {.tied = !gc.untied, .aspect_ratio = 2, .head_dim = 2, .base_depth = 4,
                         .base_head_dim = 4});
    c.vocab = 29;
    c.window = 3;
  } else {
    c = model_preset(gc.preset);
    c.tied_embedding = !gc.untied;
  }
  return c;
}

class ModelGradientTest : public ::testing::TestWithParam<GradCase> {};

TEST_P(ModelGradientTest, EveryParameterMatchesFiniteDifferences) {
  const GradCase& gc = GetParam();
  const ModelConfig c = grad_case_config(gc);
  Model<double> model = make_model<double>(c, 7);
  perturb(model, 8, 0.2);
  // Larger steps (delta ~ 0.3 instead of 0.001..0.1) so that the scan's parameters have
  // gradients well above the finite differences' rounding floor (~1e-11 on a loss of ~3).
  for (const ParamSpec& p : model.layout.params)
    if (p.init == InitKind::mamba_dt_bias)
      for (int64_t j = 0; j < p.numel; ++j) model.params[p.offset + j] += 4.0;
  if (gc.scaled) model.residual_scale = 0.6, model.logit_scale = 1.7, model.attention_scale = 0.45;
  const int64_t B = 2, L = 7;  // L > window (3): the sliding window is exercised
  Batch batch = random_batch(c, B, L, 11, gc.docs);
  const int32_t* doc = gc.docs ? batch.doc.data() : nullptr;
  Activations<double> acts = plan_activations(model, B, L, /*recompute=*/false);

  ForwardResult r = model_forward(model, acts, batch.tokens.data(), batch.targets.data(), doc);
  ASSERT_GT(r.valid_rows, 0);
  const double scale = 1.0 / r.valid_rows;
  model_backward(model, acts, batch.tokens.data(), batch.targets.data(), doc, scale);
  const std::vector<double> grads = model.grads;

  auto loss = [&] {
    return model_forward(model, acts, batch.tokens.data(), batch.targets.data(), doc).loss_sum *
           scale;
  };
  std::vector<testing::GradSpan> spans, embedding_rows;
  for (const ParamSpec& p : model.layout.params) {
    if (p.offset == model.layout.embedding && gc.untied) {
      // Untied, only the rows of the batch's tokens have a gradient (the input lookup's): the
      // others must be exactly zero. Checked: the rows of each row's first two tokens, which
      // every later valid target of their document depends on.
      std::vector<bool> used(c.vocab, false), check(c.vocab, false);
      for (int32_t t : batch.tokens) used[t] = true;
      for (int64_t r = 0; r < B; ++r) check[batch.tokens[r * L]] = check[batch.tokens[r * L + 1]] = true;
      for (int64_t v = 0; v < c.vocab; ++v) {
        const int64_t row = p.offset + v * c.d_model;
        if (!used[v]) {
          for (int64_t j = 0; j < c.d_model; ++j) ASSERT_EQ(grads[row + j], 0.0) << "row " << v;
        }
        if (check[v])
          embedding_rows.push_back({fmt::format("{} row {}", p.name, v),
                                    model.params.data() + row, grads.data() + row, c.d_model});
      }
      continue;
    }
    spans.push_back({p.name, model.params.data() + p.offset, grads.data() + p.offset, p.numel});
  }
  testing::expect_gradients_match(loss, spans, 1e-6, /*samples_per_input=*/6, /*step=*/1e-3);
  // The untied embedding's rows feed the first norm directly: a finer step keeps the stencil's
  // O(h^4) truncation (1.7e-5 relative at 1e-3 in the ArchScale case, 1e-7 at 3e-4) below 1e-6.
  testing::expect_gradients_match(loss, embedding_rows, 1e-6, /*samples_per_input=*/6,
                                  /*step=*/3e-4);
}

INSTANTIATE_TEST_SUITE_P(
    Architectures, ModelGradientTest,
    ::testing::Values(GradCase{"tiny-sambay-da", false, false}, GradCase{"tiny-sambay-da", true, true},
                      GradCase{"tiny-sambay", false, false}, GradCase{"tiny-sambay", true, false},
                      GradCase{"tiny-samba-yoco", false, false},
                      GradCase{"tiny-samba-yoco", true, true},
                      GradCase{"tiny-transformerpp", false, false},
                      GradCase{"tiny-transformerpp", true, true},
                      GradCase{"tiny-ngmu", true, false},
                      GradCase{"tiny-sambay-da", true, true, /*untied=*/true},
                      GradCase{"tiny-samba-yoco", false, false, /*untied=*/true},
                      GradCase{"tiny-transformerpp", true, false, /*untied=*/true},
                      GradCase{"tiny-archscale-sambay-da", true, false, /*untied=*/true},
                      GradCase{"tiny-archscale-sambay", false, false, /*untied=*/false},
                      GradCase{"tiny-archscale-transformerpp", true, false, /*untied=*/true}),
    [](const auto& info) {
      std::string name = info.param.preset + (info.param.docs ? "_docs" : "") +
                         (info.param.scaled ? "_scaled" : "") +
                         (info.param.untied ? "_untied" : "");
      for (char& ch : name)
        if (ch == '-') ch = '_';
      return name;
    });

// Recomputing any set of layers gives the same bits as recomputing none: every layer, none, and
// mixed plans (every other layer; the kv-source and memory layers alone, whose outputs later
// layers read; all but those).
template <typename T>
void expect_recompute_identical(const std::string& preset) {
  const ModelConfig c = model_preset(preset);
  Batch batch = random_batch(c, 2, 9, 5, true);
  const int n_layers = static_cast<int>(c.layers.size());
  std::vector<RecomputePlan> plans = {no_recompute(c), full_recompute(c)};
  RecomputePlan alternate = no_recompute(c), sources = no_recompute(c),
                all_but_sources = full_recompute(c);
  for (int i = 0; i < n_layers; ++i) alternate.layers[i] = i % 2 == 1;
  for (int i : {c.kv_source_layer, c.memory_layer})
    if (i >= 0) sources.layers[i] = true, all_but_sources.layers[i] = false;
  plans.push_back(alternate), plans.push_back(sources), plans.push_back(all_but_sources);
  std::vector<T> grads0;
  double loss0 = 0;
  for (size_t p = 0; p < plans.size(); ++p) {
    Model<T> model = make_model<T>(c, 3);
    perturb(model, 4, 0.1);
    Activations<T> acts = plan_activations(model, 2, 9, plans[p]);
    ForwardResult r = model_forward(model, acts, batch.tokens.data(), batch.targets.data(),
                                    batch.doc.data());
    model_backward(model, acts, batch.tokens.data(), batch.targets.data(), batch.doc.data(),
                   T(1) / T(r.valid_rows));
    if (p == 0) {
      grads0 = model.grads, loss0 = r.loss_sum;
      continue;
    }
    const std::string what = preset + ", " + describe_recompute(c, plans[p], false);
    EXPECT_EQ(r.loss_sum, loss0) << what;
    ASSERT_EQ(model.grads.size(), grads0.size());
    for (size_t i = 0; i < grads0.size(); ++i)
      ASSERT_EQ(model.grads[i], grads0[i]) << what << ": gradient element " << i << " differs";
  }
}

TEST(Model, RecomputeGivesBitIdenticalGradients) {
  for (const char* preset : {"tiny-sambay-da", "tiny-samba-yoco", "tiny-transformerpp"}) {
    expect_recompute_identical<float>(preset);
    expect_recompute_identical<double>(preset);
  }
}

// Each further recomputed layer of a kind frees one set of internals; the first frees none (it
// moves into the kind's shared set), and the kv-source layer keeps its keys and values.
TEST(Model, RecomputedLayersShareOneSetOfInternalsPerKind) {
  const ModelConfig c = model_preset("phi4-mini-flash");  // planning only: nothing is allocated
  std::vector<int> mamba;
  for (int i = 0; i < static_cast<int>(c.layers.size()); ++i)
    if (c.layers[i] == LayerKind::mamba && i != c.memory_layer) mamba.push_back(i);
  ASSERT_GE(mamba.size(), 3u);
  RecomputePlan plan = no_recompute(c);
  const int64_t none = activation_bytes(c, 2, 16, plan, 4);
  plan.layers[mamba[0]] = true;
  const int64_t one = activation_bytes(c, 2, 16, plan, 4);
  plan.layers[mamba[1]] = true;
  const int64_t two = activation_bytes(c, 2, 16, plan, 4);
  plan.layers[mamba[2]] = true;
  const int64_t three = activation_bytes(c, 2, 16, plan, 4);
  EXPECT_EQ(one, none);
  EXPECT_LT(two, one);
  EXPECT_EQ(two - three, one - two);
  EXPECT_EQ(activation_bytes(c, 2, 16, full_recompute(c), 4),
            activation_bytes(c, 2, 16, true, 4));
}

TEST(Model, RecomputeNeedsLessActivationMemory) {
  const ModelConfig c = model_preset("phi4-mini-flash");
  const int64_t full = activation_bytes(c, 1, 4096, false, 2);
  const int64_t recompute = activation_bytes(c, 1, 4096, true, 2);
  EXPECT_LT(recompute * 3, full) << "recompute " << recompute << " vs full " << full;
}

double loss_of(Model<double>& model, const Batch& b, const int32_t* doc) {
  Activations<double> acts = plan_activations(model, b.B, b.L, false);
  return model_forward(model, acts, b.tokens.data(), b.targets.data(), doc).loss_sum;
}

TEST(Model, RowsOfABatchAreIndependent) {
  const ModelConfig c = model_preset("tiny-sambay-da");
  Model<double> model = make_model<double>(c, 1);
  perturb(model, 2, 0.2);
  Batch both = random_batch(c, 2, 8, 3, false);
  double separate = 0;
  for (int row = 0; row < 2; ++row) {
    Batch one{1, 8, {}, {}, {}};
    one.tokens.assign(both.tokens.begin() + row * 8, both.tokens.begin() + (row + 1) * 8);
    one.targets.assign(both.targets.begin() + row * 8, both.targets.begin() + (row + 1) * 8);
    separate += loss_of(model, one, nullptr);
  }
  EXPECT_NEAR(loss_of(model, both, nullptr), separate, 1e-12 * std::abs(separate));
}

TEST(Model, PackedDocumentsDoNotSeeEachOther) {
  // A row holding documents [A | B] with doc ids gives the losses of A and B run alone.
  for (const char* preset : {"tiny-sambay-da", "tiny-samba-yoco", "tiny-ngmu"}) {
    const ModelConfig c = model_preset(preset);
    Model<double> model = make_model<double>(c, 1);
    perturb(model, 2, 0.2);
    const int64_t la = 5, lb = 6;
    Batch packed = random_batch(c, 1, la + lb, 4, false);
    packed.doc.assign(la + lb, 0);
    for (int64_t t = la; t < la + lb; ++t) packed.doc[t] = 1;
    packed.targets[la - 1] = -1;  // A's last token would predict B's first: not part of A
    Batch a{1, la, {}, {}, {}}, b{1, lb, {}, {}, {}};
    a.tokens.assign(packed.tokens.begin(), packed.tokens.begin() + la);
    a.targets.assign(packed.targets.begin(), packed.targets.begin() + la);
    b.tokens.assign(packed.tokens.begin() + la, packed.tokens.end());
    b.targets.assign(packed.targets.begin() + la, packed.targets.end());
    const double expect = loss_of(model, a, nullptr) + loss_of(model, b, nullptr);
    EXPECT_NEAR(loss_of(model, packed, packed.doc.data()), expect, 1e-12 * std::abs(expect))
        << preset;
  }
}

TEST(Model, LossAtPositionIgnoresLaterTokens) {
  const ModelConfig c = model_preset("tiny-sambay-da");
  Model<double> model = make_model<double>(c, 1);
  perturb(model, 2, 0.2);
  Batch b = random_batch(c, 1, 9, 6, false);
  for (int64_t t = 0; t < 9; ++t)
    if (t != 4) b.targets[t] = -1;
  const double before = loss_of(model, b, nullptr);
  b.tokens[5] = (b.tokens[5] + 1) % c.vocab;
  b.tokens[8] = (b.tokens[8] + 3) % c.vocab;
  EXPECT_EQ(loss_of(model, b, nullptr), before);
  b.tokens[4] = (b.tokens[4] + 1) % c.vocab;  // the position itself does matter
  EXPECT_NE(loss_of(model, b, nullptr), before);
}

TEST(Model, GreedyNextTokenIsTheMostLikelyTarget) {
  // Independent of the logits code: the most likely next token is the target with the smallest
  // loss at the last context position.
  const ModelConfig c = model_preset("tiny-sambay-da");
  Model<double> model = make_model<double>(c, 3);
  perturb(model, 4, 0.3);
  const int64_t len = 6;
  Batch b = random_batch(c, 1, len, 8, false);
  Activations<double> padded = plan_activations(model, 1, 11, false);
  const int32_t greedy = greedy_next_token(model, padded, b.tokens.data(), len);
  Activations<double> exact = plan_activations(model, 1, len, false);
  int32_t best = -1;
  double best_loss = INFINITY;
  for (int32_t v = 0; v < c.vocab; ++v) {
    std::vector<int32_t> targets(len, -1);
    targets[len - 1] = v;
    const double loss = model_forward(model, exact, b.tokens.data(), targets.data(), nullptr).loss_sum;
    if (loss < best_loss) best_loss = loss, best = v;
  }
  EXPECT_EQ(greedy, best);
  EXPECT_THROW(greedy_next_token(model, padded, b.tokens.data(), 12), Error);
}

// make_model applies the config's init rule and μP++: ArchScale's untied μP++ starts with a
// zero readout (so every first prediction is uniform: loss log V), a small embedding, and the
// residual, logit and attention scales of the rule.
TEST(Model, ArchScaleMupModelStartsAsTheRulesSay) {
  ModelConfig c = archscale_model("sambay", 8, {.tied = false, .aspect_ratio = 4, .head_dim = 8});
  c.vocab = 53;
  Model<double> model = make_model<double>(c, 2);
  EXPECT_DOUBLE_EQ(model.residual_scale, 1.0 / 4.0);
  EXPECT_DOUBLE_EQ(model.logit_scale, 2.0);                        // d0 / D = 16 / 8
  EXPECT_DOUBLE_EQ(model.attention_scale, std::sqrt(128.0) / 8.0);  // sqrt(hd0) / head_dim
  for (int64_t i = model.layout.readout; i < model.layout.total; ++i)
    ASSERT_EQ(model.params[i], 0.0) << i;
  Batch b = random_batch(c, 2, 9, 3, true);
  Activations<double> acts = plan_activations(model, 2, 9, false);
  const ForwardResult r = model_forward(model, acts, b.tokens.data(), b.targets.data(), b.doc.data());
  EXPECT_NEAR(r.loss_sum / r.valid_rows, std::log(53.0), 1e-12);
  // Its gradient reaches the readout only through the loss, the embedding only through the
  // blocks (a zero readout passes nothing back to them).
  model_backward(model, acts, b.tokens.data(), b.targets.data(), b.doc.data(), 1.0 / r.valid_rows);
  double readout_grad = 0, embedding_grad = 0;
  for (int64_t i = model.layout.readout; i < model.layout.total; ++i)
    readout_grad += std::abs(model.grads[i]);
  for (int64_t i = 0; i < c.vocab * c.d_model; ++i) embedding_grad += std::abs(model.grads[i]);
  EXPECT_GT(readout_grad, 0);
  EXPECT_EQ(embedding_grad, 0);
}

// The forward reads Model::attention_scale (the gradient checks show forward and backward agree
// on it, not that it is used): scores scaled differently give another loss, on every attention
// kind.
TEST(Model, AttentionScaleIsTheModelsOwn) {
  for (const char* preset : {"tiny-sambay-da", "tiny-sambay", "tiny-transformerpp"}) {
    const ModelConfig c = model_preset(preset);
    Model<double> model = make_model<double>(c, 5);
    EXPECT_DOUBLE_EQ(model.attention_scale, 1.0 / std::sqrt(double(c.head_dim)));
    perturb(model, 6, 0.3);
    Batch b = random_batch(c, 2, 9, 7, false);
    Activations<double> acts = plan_activations(model, 2, 9, false);
    const double before = model_forward(model, acts, b.tokens.data(), b.targets.data(), nullptr).loss_sum;
    model.attention_scale *= 2;
    const double after = model_forward(model, acts, b.tokens.data(), b.targets.data(), nullptr).loss_sum;
    EXPECT_GT(std::abs(after - before), 1e-6 * std::abs(before)) << preset;
  }
}

TEST(Model, GreedyNextTokenReadsTheUntiedHead) {
  ModelConfig c = model_preset("tiny-sambay-da");
  c.tied_embedding = false;
  c.vocab = 200;  // many candidates: reading the wrong matrix would not pick the same one
  Model<double> model = make_model<double>(c, 3);
  perturb(model, 4, 0.3);
  const int64_t len = 5;
  Batch b = random_batch(c, 1, len, 8, false);
  Activations<double> acts = plan_activations(model, 1, len, false);
  const int32_t greedy = greedy_next_token(model, acts, b.tokens.data(), len);
  int32_t best = -1;
  double best_loss = INFINITY;
  for (int32_t v = 0; v < c.vocab; ++v) {
    std::vector<int32_t> targets(len, -1);
    targets[len - 1] = v;
    const double loss = model_forward(model, acts, b.tokens.data(), targets.data(), nullptr).loss_sum;
    if (loss < best_loss) best_loss = loss, best = v;
  }
  // The loss reads the readout; greedy decoding through the embedding (a different perturbed
  // matrix) would pick another token.
  EXPECT_EQ(greedy, best);
}

TEST(Model, Float32ForwardMatchesFloat64) {
  const ModelConfig c = model_preset("tiny-sambay-da");
  Model<double> m64 = make_model<double>(c, 1);
  Model<float> m32 = make_model<float>(c, 1);
  Batch b = random_batch(c, 2, 8, 9, true);
  Activations<double> a64 = plan_activations(m64, 2, 8, false);
  Activations<float> a32 = plan_activations(m32, 2, 8, false);
  const double l64 = model_forward(m64, a64, b.tokens.data(), b.targets.data(), b.doc.data()).loss_sum;
  const double l32 = model_forward(m32, a32, b.tokens.data(), b.targets.data(), b.doc.data()).loss_sum;
  EXPECT_NEAR(l32, l64, 1e-5 * std::abs(l64));
}

}  // namespace
}  // namespace sambay
