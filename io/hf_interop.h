// Hugging Face interop: the layout of the public release microsoft/Phi-4-mini-flash-reasoning
// (model_type "phi4flash", architecture Phi4FlashForCausalLM, its own modeling code loaded with
// trust_remote_code). Our parameters map one to one onto its tensors:
//   embedding.weight                    model.embed_tokens.weight (tied: no lm_head.weight)
//   lm_head.weight (untied head)        lm_head.weight, with tie_word_embeddings false
//   final_norm.{weight,bias}            model.final_layernorm.{weight,bias}
//   layers.i.norm1.*  / norm2.*         model.layers.i.input_layernorm.* / post_attention_layernorm.*
//   layers.i.mlp.fc1/fc2.weight         model.layers.i.mlp.fc1/fc2.weight
//   layers.i.mixer.<x>                  model.layers.i.attn.<x>, except
//     qkv_proj.* and q_proj.*           attn.Wqkv.* (cross-attention layers: queries only)
//     lambda_{q1,k1,q2,k2}              attn.inner_cross_attn.lambda_*
//     head_norm.weight                  attn.inner_cross_attn.subln.weight
//     conv1d.weight [E, K]              attn.conv1d.weight [E, 1, K] (PyTorch Conv1d shape)
// The element orders agree (docs/model.md, "Parameters": x before z in in_proj, gate before
// value in fc1, heads paired by adjacency), so values are copied unchanged.
#pragma once

#include "core/model_config.h"
#include "core/param_layout.h"
#include "io/bpe_tokenizer.h"
#include "io/json.h"

#include <memory>
#include <span>
#include <string>
#include <vector>

namespace sambay {

struct HfTensorName {
  std::string name;
  std::vector<int64_t> shape;
};
HfTensorName hf_tensor_for(const ParamSpec& p);

// Fields of `c` that the release's modeling code cannot express (it fixes the SambaY pattern,
// differential attention with biases, LayerNorm, head_dim = d / H, E a multiple of d, and no
// muP++ scaling); empty when an export runs there as it runs in sambay.
std::vector<std::string> hf_incompatibilities(const ModelConfig& c);

// Fields that vLLM's Phi4Flash model cannot load although the release's code can: it builds its
// Mamba layers with d_state 16, d_conv 4, expand 2 and dt_rank ceil(d / 16) whatever config.json
// says, and its differential attention splits heads and key/value heads in pairs.
std::vector<std::string> vllm_incompatibilities(const ModelConfig& c);

// config.json for `c` with the release's keys and "layer_types" (which vLLM reads), plus
// "sambay_model_config" (our config text) so that importing restores every field exactly.
std::string hf_config_json(const ModelConfig& c, bool bf16);

// generation_config.json: bos = eos = pad = the end-of-document token, as in the release.
std::string hf_generation_config_json(const ModelConfig& c);

// The model config a config.json describes (our own export's "sambay_model_config" when present,
// checked against the standard keys). Errors name `where` and the key.
ModelConfig model_config_from_hf(const Json& config, const std::string& where);

struct HfExportOptions {
  bool bf16 = false;   // as released; else float32 (exact)
  bool force = false;  // export a model the release's code cannot run
  // One model.safetensors up to this size; above it shards model-0000i-of-0000n.safetensors and
  // model.safetensors.index.json (Hugging Face's default limit).
  int64_t max_shard_bytes = 5'000'000'000;
  // Written as tokenizer files when set; its vocabulary must fit the model's and its
  // end-of-document id be the model's eod_token.
  std::shared_ptr<const BpeTokenizer> tokenizer;
};

struct HfExportReport {
  std::vector<std::string> files;     // written into out_dir
  std::vector<std::string> warnings;  // vllm_incompatibilities
};

// Writes the safetensors, config.json, generation_config.json and the tokenizer files into
// out_dir. Throws listing the incompatible fields unless `force`.
HfExportReport export_hf(const ModelConfig& c, std::span<const float> params,
                         const std::string& out_dir, const HfExportOptions& options);

struct HfImport {
  ModelConfig model;
  std::vector<float> params;  // in build_param_layout(model)'s layout
};
// Reads dir/config.json and dir/model.safetensors, or the shards a
// model.safetensors.index.json lists. Every tensor must be present with its shape; an unknown
// tensor is an error (a tied model's lm_head.weight is accepted only when equal to the
// embedding; an untied model's is its readout).
HfImport import_hf(const std::string& dir);

}  // namespace sambay
