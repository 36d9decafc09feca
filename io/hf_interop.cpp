#include "io/hf_interop.h"

#include "core/check.h"
#include "io/checkpoint.h"
#include "io/durable_fs.h"
#include "io/hf_tokenizer.h"
#include "io/safetensors.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <set>

namespace sambay {

namespace fs = std::filesystem;

namespace {

// The mixer's parameter names that the release spells differently.
std::string hf_mixer_name(const std::string& ours) {
  static const std::map<std::string, std::string> renamed = {
      {"qkv_proj.weight", "Wqkv.weight"},
      {"qkv_proj.bias", "Wqkv.bias"},
      {"q_proj.weight", "Wqkv.weight"},
      {"q_proj.bias", "Wqkv.bias"},
      {"lambda_q1", "inner_cross_attn.lambda_q1"},
      {"lambda_k1", "inner_cross_attn.lambda_k1"},
      {"lambda_q2", "inner_cross_attn.lambda_q2"},
      {"lambda_k2", "inner_cross_attn.lambda_k2"},
      {"head_norm.weight", "inner_cross_attn.subln.weight"},
  };
  auto it = renamed.find(ours);
  return it == renamed.end() ? ours : it->second;
}

bool has_prefix(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

int64_t int_key(const Json& config, const char* key, const std::string& where) {
  const Json* v = json_find(config, key);
  if (!v) fail("{}: key '{}' is missing", where, key);
  return json_int(*v, fmt::format("{}: {}", where, key));
}

int64_t int_key_or(const Json& config, const char* key, int64_t fallback,
                   const std::string& where) {
  const Json* v = json_find(config, key);
  if (!v || v->is_null() || (v->is_string() && v->get_ref<const std::string&>() == "auto"))
    return fallback;
  return json_int(*v, fmt::format("{}: {}", where, key));
}

// The standard keys, read as the release's code reads them.
ModelConfig model_config_from_hf_keys(const Json& j, const std::string& where) {
  if (const Json* t = json_find(j, "model_type"); t && t->is_string() && *t != "phi4flash")
    fail("{}: model_type is '{}', sambay imports 'phi4flash'", where, t->get<std::string>());
  ModelConfig c;
  c.name = "hf-import";
  c.d_model = int_key(j, "hidden_size", where);
  c.vocab = int_key(j, "vocab_size", where);
  c.n_heads = int_key(j, "num_attention_heads", where);
  c.n_kv_heads = int_key(j, "num_key_value_heads", where);
  if (c.n_heads <= 0 || c.d_model % c.n_heads != 0)
    fail("{}: hidden_size {} is not a multiple of num_attention_heads {}", where, c.d_model,
         c.n_heads);
  c.head_dim = c.d_model / c.n_heads;
  c.d_ff = int_key(j, "intermediate_size", where);
  if (int_key_or(j, "mb_per_layer", 2, where) != 2)
    fail("{}: mb_per_layer must be 2 (Mamba on every even layer of the SambaY pattern)", where);
  const Json* window = json_find(j, "sliding_window");
  if (window && window->is_array()) {  // as the config class expands it
    const Json* last = nullptr;
    for (const Json& w : *window)
      if (!w.is_null()) last = &w;
    window = last;
  }
  if (!window) fail("{}: key 'sliding_window' is missing", where);
  c.window = json_int(*window, where + ": sliding_window");
  c.differential = true;
  c.attention_bias = true;
  c.d_inner = int_key_or(j, "mamba_expand", 2, where) * c.d_model;
  c.d_state = int_key_or(j, "mamba_d_state", 16, where);
  c.d_conv = int_key_or(j, "mamba_d_conv", 4, where);
  c.dt_rank = int_key_or(j, "mamba_dt_rank", (c.d_model + 15) / 16, where);
  c.norm = NormKind::layernorm;
  if (const Json* eps = json_find(j, "layer_norm_eps"))
    c.norm_eps = json_number(*eps, where + ": layer_norm_eps");
  if (const Json* eos = json_find(j, "eos_token_id"); eos && eos->is_number_integer())
    c.eod_token = static_cast<int32_t>(json_int(*eos, where + ": eos_token_id"));
  if (const Json* tie = json_find(j, "tie_word_embeddings"); tie && !tie->is_null()) {
    if (!tie->is_boolean()) fail("{}: tie_word_embeddings is not true or false", where);
    c.tied_embedding = tie->get<bool>();
  }
  set_sambay_pattern(c, int_key(j, "num_hidden_layers", where), /*gmu=*/true);
  validate_model_config(c, where);
  return c;
}

}  // namespace

HfTensorName hf_tensor_for(const ParamSpec& p) {
  HfTensorName out{"", p.shape};
  if (p.name == "embedding.weight") {
    out.name = "model.embed_tokens.weight";
  } else if (p.name == "lm_head.weight") {
    out.name = "lm_head.weight";  // an untied head (tie_word_embeddings false)
  } else if (has_prefix(p.name, "final_norm.")) {
    out.name = "model.final_layernorm." + p.name.substr(11);
  } else {
    SAMBAY_CHECK(has_prefix(p.name, "layers."), "parameter '{}' has no Hugging Face name", p.name);
    const size_t dot = p.name.find('.', 7);
    const std::string layer = p.name.substr(0, dot), rest = p.name.substr(dot + 1);
    std::string mapped;
    if (has_prefix(rest, "norm1."))
      mapped = "input_layernorm." + rest.substr(6);
    else if (has_prefix(rest, "norm2."))
      mapped = "post_attention_layernorm." + rest.substr(6);
    else if (has_prefix(rest, "mixer."))
      mapped = "attn." + hf_mixer_name(rest.substr(6));
    else
      mapped = rest;  // mlp.fc1.weight, mlp.fc2.weight
    out.name = "model." + layer + "." + mapped;
    if (rest == "mixer.conv1d.weight") out.shape = {p.shape[0], 1, p.shape[1]};
  }
  return out;
}

std::vector<std::string> hf_incompatibilities(const ModelConfig& c) {
  std::vector<std::string> out;
  ModelConfig pattern = c;
  set_sambay_pattern(pattern, c.n_layers() >= 4 && c.n_layers() % 4 == 0 ? c.n_layers() : 4, true);
  if (c.layers != pattern.layers || c.kv_source_layer != pattern.kv_source_layer ||
      c.memory_layer != pattern.memory_layer)
    out.push_back("layers: not the SambaY pattern (Mamba/SWA, memory, full attention, GMU/cross)");
  if (!c.differential) out.push_back("differential: the release uses differential attention");
  if (!c.attention_bias) out.push_back("attention_bias: the release has attention biases");
  if (c.rope) out.push_back("rope: the release has no rotary embedding");
  if (c.norm != NormKind::layernorm) out.push_back("norm: the release uses LayerNorm");
  if (c.normalized_gmu) out.push_back("normalized_gmu: the release's GMU has no norm");
  if (c.head_dim * c.n_heads != c.d_model)
    out.push_back(fmt::format("head_dim: the release uses d_model / n_heads = {}, not {}",
                              c.n_heads ? c.d_model / c.n_heads : 0, c.head_dim));
  if (c.d_model <= 0 || c.d_inner % c.d_model != 0)
    out.push_back(fmt::format("d_inner: {} is not a multiple of d_model {} (mamba_expand)",
                              c.d_inner, c.d_model));
  if (c.mup_base_width != 0) out.push_back("mup_base_width: muP++ scaling is not in the release");
  return out;  // an untied head is expressible: tie_word_embeddings false and lm_head.weight
}

std::vector<std::string> vllm_incompatibilities(const ModelConfig& c) {
  std::vector<std::string> out;
  if (c.d_state != 16) out.push_back(fmt::format("d_state: vLLM fixes 16, this model has {}", c.d_state));
  if (c.d_conv != 4) out.push_back(fmt::format("d_conv: vLLM fixes 4, this model has {}", c.d_conv));
  if (c.d_inner != 2 * c.d_model)
    out.push_back(fmt::format("d_inner: vLLM fixes 2 d_model = {}, this model has {}",
                              2 * c.d_model, c.d_inner));
  if (c.dt_rank != (c.d_model + 15) / 16)
    out.push_back(fmt::format("dt_rank: vLLM fixes ceil(d_model / 16) = {}, this model has {}",
                              (c.d_model + 15) / 16, c.dt_rank));
  if (c.n_heads % 2 != 0 || c.n_kv_heads % 2 != 0)
    out.push_back(fmt::format("n_heads, n_kv_heads: vLLM's differential attention needs both "
                              "even, this model has {} and {}",
                              c.n_heads, c.n_kv_heads));
  return out;
}

std::string hf_config_json(const ModelConfig& c, bool bf16) {
  const Json eod = c.eod_token >= 0 ? Json(c.eod_token) : Json(nullptr);
  Json layer_types = Json::array();
  for (LayerKind k : c.layers)
    layer_types.push_back(k == LayerKind::sliding_window ? "sliding_attention" : "full_attention");
  const Json j = {
      {"architectures", {"Phi4FlashForCausalLM"}},
      {"auto_map",
       {{"AutoConfig", "configuration_phi4flash.Phi4FlashConfig"},
        {"AutoModelForCausalLM", "modeling_phi4flash.Phi4FlashForCausalLM"}}},
      {"model_type", "phi4flash"},
      {"hidden_size", c.d_model},
      {"intermediate_size", c.d_ff},
      {"num_hidden_layers", c.n_layers()},
      {"num_attention_heads", c.n_heads},
      {"num_key_value_heads", c.n_kv_heads},
      {"sliding_window", c.window},
      {"layer_types", layer_types},
      {"mb_per_layer", 2},
      {"mamba_d_state", c.d_state},
      {"mamba_d_conv", c.d_conv},
      {"mamba_expand", c.d_model > 0 ? c.d_inner / c.d_model : 0},
      {"mamba_dt_rank", c.dt_rank},
      {"mamba_conv_bias", true},
      {"mamba_proj_bias", false},
      {"layer_norm_eps", c.norm_eps},
      {"hidden_act", "silu"},
      {"vocab_size", c.vocab},
      {"bos_token_id", eod},
      {"eos_token_id", eod},
      {"pad_token_id", eod},
      {"tie_word_embeddings", c.tied_embedding},
      {"mlp_bias", false},
      {"lm_head_bias", false},
      {"attention_dropout", 0.0},
      {"embd_pdrop", 0.0},
      {"resid_pdrop", 0.0},
      {"initializer_range", 0.02},
      {"max_position_embeddings", 262144},
      {"use_cache", true},
      {"torch_dtype", bf16 ? "bfloat16" : "float32"},
      {"sambay_model_config", model_config_to_text(c)}};
  return j.dump(2) + "\n";
}

std::string hf_generation_config_json(const ModelConfig& c) {
  const Json eod = c.eod_token >= 0 ? Json(c.eod_token) : Json(nullptr);
  const Json j = {{"_from_model_config", true},
                  {"bos_token_id", eod},
                  {"eos_token_id", eod},
                  {"pad_token_id", eod}};
  return j.dump(2) + "\n";
}

ModelConfig model_config_from_hf(const Json& j, const std::string& where) {
  if (!j.is_object()) fail("{}: not a JSON object", where);
  const Json* ours = json_find(j, "sambay_model_config");
  if (!ours) return model_config_from_hf_keys(j, where);
  const ModelConfig c =
      parse_model_config_text(json_string(*ours, where + ": sambay_model_config"), where);
  // Someone may have edited the standard keys: they must still describe the same model.
  const std::pair<const char*, int64_t> keys[] = {
      {"hidden_size", c.d_model},         {"vocab_size", c.vocab},
      {"num_hidden_layers", c.n_layers()}, {"num_attention_heads", c.n_heads},
      {"num_key_value_heads", c.n_kv_heads}, {"intermediate_size", c.d_ff}};
  for (const auto& [key, value] : keys)
    if (int_key(j, key, where) != value)
      fail("{}: {} is {} but sambay_model_config says {}", where, key, int_key(j, key, where),
           value);
  if (const Json* tie = json_find(j, "tie_word_embeddings");
      tie && tie->is_boolean() && tie->get<bool>() != c.tied_embedding)
    fail("{}: tie_word_embeddings is {} but sambay_model_config says tied_embedding = {}", where,
         tie->get<bool>(), c.tied_embedding);
  return c;
}

HfExportReport export_hf(const ModelConfig& c, std::span<const float> params,
                         const std::string& out_dir, const HfExportOptions& options) {
  const std::vector<std::string> problems = hf_incompatibilities(c);
  if (!problems.empty() && !options.force)
    fail("model '{}' cannot run in the Phi4Flash code of the Hugging Face release:\n  {}\n"
         "(--force exports anyway; sambay can import such an export, other tools cannot run it)",
         c.name, fmt::join(problems, "\n  "));
  if (const BpeTokenizer* t = options.tokenizer.get()) {
    if (t->vocab_size() > c.vocab)
      fail("tokenizer {}: its {} ids do not fit model '{}' (model.vocab = {})", t->path(),
           t->vocab_size(), c.name, c.vocab);
    if (t->eod() != c.eod_token)
      fail("tokenizer {}: it ends documents with id {}, model '{}' with eod_token {}", t->path(),
           t->eod(), c.name, c.eod_token);
  }
  SAMBAY_CHECK(options.max_shard_bytes > 0, "max_shard_bytes must be positive");
  const ParamLayout layout = build_param_layout(c);
  SAMBAY_CHECK(static_cast<int64_t>(params.size()) == layout.total,
               "{} parameters given, the layout has {}", params.size(), layout.total);
  HfExportReport report;
  report.warnings = vllm_incompatibilities(c);

  // Tensors in layout order, cut into shards of at most max_shard_bytes (a larger tensor alone).
  const int64_t esize = options.bf16 ? 2 : 4;
  std::vector<std::vector<SafetensorsEntry>> shards(1);
  int64_t shard_bytes = 0, total_bytes = 0;
  for (const ParamSpec& p : layout.params) {
    HfTensorName hf = hf_tensor_for(p);
    const int64_t bytes = p.numel * esize;
    if (!shards.back().empty() && shard_bytes + bytes > options.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back({hf.name, hf.shape, params.data() + p.offset});
    shard_bytes += bytes;
    total_bytes += bytes;
  }
  fs::create_directories(out_dir);
  const std::vector<std::pair<std::string, std::string>> metadata = {{"format", "pt"},
                                                                     {"producer", "sambay"}};
  const fs::path index_path = fs::path(out_dir) / "model.safetensors.index.json";
  const fs::path single_path = fs::path(out_dir) / "model.safetensors";
  if (shards.size() == 1) {
    write_safetensors(single_path.string(), shards[0], options.bf16, metadata);
    fs::remove(index_path);  // from an earlier, sharded export into the same directory
    report.files.push_back("model.safetensors");
  } else {
    Json weight_map = Json::object();
    for (size_t i = 0; i < shards.size(); ++i) {
      const std::string name =
          fmt::format("model-{:05}-of-{:05}.safetensors", i + 1, shards.size());
      write_safetensors((fs::path(out_dir) / name).string(), shards[i], options.bf16, metadata);
      for (const SafetensorsEntry& e : shards[i]) weight_map[e.name] = name;
      report.files.push_back(name);
    }
    const Json index = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}};
    write_file_durably(index_path.string(), index.dump(2) + "\n");
    fs::remove(single_path);
    report.files.push_back("model.safetensors.index.json");
  }
  write_file_durably((fs::path(out_dir) / "config.json").string(),
                     hf_config_json(c, options.bf16));
  write_file_durably((fs::path(out_dir) / "generation_config.json").string(),
                     hf_generation_config_json(c));
  report.files.push_back("config.json");
  report.files.push_back("generation_config.json");
  if (options.tokenizer)
    for (const std::string& f :
         write_hf_tokenizer(*options.tokenizer, c.eod_token, 262144, out_dir))
      report.files.push_back(f);
  return report;
}

HfImport import_hf(const std::string& dir) {
  const std::string config_path = (fs::path(dir) / "config.json").string();
  HfImport out;
  out.model = model_config_from_hf(parse_json(read_text_file(config_path), config_path),
                                   config_path);

  // The safetensors files: one, or the shards an index lists.
  std::vector<std::string> files;
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  if (fs::exists(index)) {
    const Json j = parse_json(read_text_file(index.string()), index.string());
    const Json* map = json_find(j, "weight_map");
    if (!map || !map->is_object()) fail("{}: no weight_map object", index.string());
    std::set<std::string> names;
    for (const auto& [tensor, file] : map->items())
      names.insert(json_string(file, index.string() + ": weight_map." + tensor));
    for (const std::string& n : names) files.push_back((fs::path(dir) / n).string());
  } else {
    files.push_back((fs::path(dir) / "model.safetensors").string());
  }
  std::vector<std::unique_ptr<SafetensorsFile>> opened;
  std::map<std::string, std::pair<const SafetensorsFile*, const SafetensorsTensor*>> tensors;
  for (const std::string& f : files) {
    opened.push_back(std::make_unique<SafetensorsFile>(open_safetensors(f)));
    for (const SafetensorsTensor& t : opened.back()->tensors)
      if (!tensors.emplace(t.name, std::make_pair(opened.back().get(), &t)).second)
        fail("{}: tensor '{}' is also in another file", f, t.name);
  }

  const ParamLayout layout = build_param_layout(out.model);
  out.params.assign(layout.total, 0.0f);
  for (const ParamSpec& p : layout.params) {
    const HfTensorName hf = hf_tensor_for(p);
    auto it = tensors.find(hf.name);
    if (it == tensors.end()) fail("{}: tensor '{}' (sambay's {}) is missing", dir, hf.name, p.name);
    const auto [file, t] = it->second;
    if (t->shape != hf.shape)
      fail("{}: tensor '{}' has shape [{}], the config needs [{}]", file->path(), hf.name,
           fmt::join(t->shape, ", "), fmt::join(hf.shape, ", "));
    file->read_f32(*t, out.params.data() + p.offset);
    tensors.erase(it);
  }
  // A tied head (the release's) may come with an explicit copy of the embedding as lm_head.weight.
  if (auto head = tensors.find("lm_head.weight"); head != tensors.end() && out.model.tied_embedding) {
    const auto [file, t] = head->second;
    const ParamSpec& emb = layout.params[find_param(layout, "embedding.weight")];
    std::vector<float> values(emb.numel);
    if (t->shape != emb.shape) fail("{}: lm_head.weight has the wrong shape", file->path());
    file->read_f32(*t, values.data());
    if (std::memcmp(values.data(), out.params.data() + emb.offset, values.size() * 4) != 0)
      fail("{}: lm_head.weight differs from the embedding, but the config ties them "
           "(tie_word_embeddings)",
           file->path());
    tensors.erase(head);
  }
  if (!tensors.empty())
    fail("{}: tensor '{}' has no place in the model ({} unknown tensors)", dir,
         tensors.begin()->first, tensors.size());
  return out;
}

}  // namespace sambay
