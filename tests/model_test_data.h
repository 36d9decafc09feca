// Inputs shared by the whole-model tests: random micro-batches with packed documents, and the
// small GPU-shaped model configs.
#pragma once

#include "core/model_config.h"
#include "core/param_layout.h"
#include "tests/test_util.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace sambay::testing {

// A micro-batch [B, L]: random tokens, about a quarter of the targets ignored (so the valid
// count differs between micro-batches and ranks), and documents that end at different places in
// each row: row 0 (and every even row) at L / 2, odd rows at 3 and L - 5, so that document
// boundaries fall both on and inside the chunks of a split sequence.
struct TokenBatch {
  std::vector<int32_t> tokens, targets, doc;
};

inline TokenBatch random_token_batch(int64_t vocab, int64_t B, int64_t L, uint64_t seed) {
  const std::vector<double> tok = random_uniform(B * L, seed, 0, double(vocab));
  const std::vector<double> tgt = random_uniform(B * L, seed + 1000, 0, double(vocab));
  const std::vector<double> drop = random_uniform(B * L, seed + 2000, 0, 1);
  TokenBatch mb;
  for (int64_t i = 0; i < B * L; ++i) {
    const int64_t b = i / L, t = i % L;
    mb.tokens.push_back(int32_t(tok[i]));
    mb.targets.push_back(drop[i] < 0.25 ? -1 : int32_t(tgt[i]));
    mb.doc.push_back(b % 2 == 0 ? int32_t(t >= L / 2) : int32_t(t >= 3) + int32_t(t >= L - 5));
  }
  return mb;
}

inline int64_t valid_targets(const std::vector<int32_t>& targets) {
  return std::count_if(targets.begin(), targets.end(), [](int32_t t) { return t >= 0; });
}

// Small but GPU-shaped: widths multiples of 8, N = 16 (the scan kernel's sizes), head dim 16.
// Variants: sambay-da, sambay, samba-yoco, transformerpp; a "-mup-untied" suffix gives the form
// of ArchScale's scaling runs: an untied head (lm_head.weight), μP++ with the depth rule and a
// base head dim of 32 (attention scores times sqrt(32) / 16, not 1 / 4), and ArchScale's init.
inline ModelConfig gpu_test_config(std::string variant) {
  const std::string mup_untied = "-mup-untied";
  const bool archscale = variant.ends_with(mup_untied);
  if (archscale) variant.resize(variant.size() - mup_untied.size());
  ModelConfig c;
  if (archscale) {
    c.tied_embedding = false;
    c.init = InitRule::archscale;
    c.mup_base_width = 32;
    c.mup_base_depth = 4;
    c.mup_base_head_dim = 32;
  }
  c.name = "gpu-test-" + variant + (archscale ? mup_untied : "");
  c.d_model = 64;
  c.vocab = 131;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 16;
  c.window = 8;
  c.differential = variant == "sambay-da";
  c.d_ff = 96;
  c.d_inner = 128;
  c.d_state = 16;
  c.d_conv = 4;
  c.dt_rank = 4;
  set_sambay_pattern(c, 8, variant != "samba-yoco");
  if (variant == "transformerpp") {
    c.layers.assign(4, LayerKind::full_attention);
    c.kv_source_layer = c.memory_layer = -1;
    c.attention_bias = false;
    c.rope = true;
    c.norm = NormKind::rmsnorm;
  }
  return c;
}

// Every parameter tensor's gradient in `got` against `ref` (flat buffers of `layout`):
// ||got - ref|| <= tolerance * ||ref|| per tensor, naming the tensor (and `what`) when not.
template <typename A, typename B>
void expect_gradients_match(const ParamLayout& layout, const A& got, const B& ref,
                            double tolerance, const std::string& what) {
  for (const ParamSpec& p : layout.params) {
    double diff = 0, norm = 0;
    for (int64_t i = p.offset; i < p.offset + p.numel; ++i) {
      const double d = double(got[i]) - double(ref[i]);
      diff += d * d;
      norm += double(ref[i]) * double(ref[i]);
    }
    EXPECT_LE(std::sqrt(diff), tolerance * std::sqrt(norm))
        << what << " " << p.name << ": gradient differs from the single-rank run (relative "
        << std::sqrt(diff / std::max(norm, 1e-300)) << ")";
  }
}

}  // namespace sambay::testing
