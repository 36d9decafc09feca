// Hugging Face interop: our names and config keys against the public release
// microsoft/Phi-4-mini-flash-reasoning (its model.safetensors.index.json and config.json), the
// bit-exact export -> import round trip, and refusals of damaged or foreign files.
#include "core/bf16.h"
#include "io/checkpoint.h"
#include "io/hf_interop.h"
#include "io/safetensors.h"
#include "tests/io_test_util.h"

#include <cstring>
#include <filesystem>
#include <set>

namespace sambay {
namespace {

namespace fs = std::filesystem;
using testing::ScratchDir;
using testing::expect_error;
using testing::read_bytes;
using testing::write_bytes;

// A model the release's code runs: the SambaY pattern with differential attention, head_dim =
// d / H, E = 2d; small, with every layer kind.
ModelConfig small_phi4flash() {
  ModelConfig c = model_preset("phi4-mini-flash");
  c.name = "tiny-phi4flash";
  c.d_model = 16;
  c.vocab = 37;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 4;
  c.window = 3;
  c.d_inner = 32;
  c.d_state = 4;
  c.dt_rank = 1;
  c.d_ff = 24;
  c.eod_token = 36;
  set_sambay_pattern(c, 8, true);
  validate_model_config(c, "test");
  return c;
}

std::vector<float> random_params(const ModelConfig& c) {
  const ParamLayout layout = build_param_layout(c);
  std::vector<float> p(layout.total);
  init_params(layout, p.data(), 3);
  return p;
}

HfExportOptions export_options(bool bf16, bool force, int64_t max_shard_bytes = 5'000'000'000) {
  HfExportOptions o;
  o.bf16 = bf16, o.force = force, o.max_shard_bytes = max_shard_bytes;
  return o;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

TEST(HfInterop, Phi4MiniFlashNamesAreTheReleaseNames) {
  const ModelConfig c = model_preset("phi4-mini-flash");
  EXPECT_TRUE(hf_incompatibilities(c).empty());
  const ParamLayout layout = build_param_layout(c);
  std::map<std::string, std::vector<int64_t>> names;
  for (const ParamSpec& p : layout.params) {
    const HfTensorName hf = hf_tensor_for(p);
    EXPECT_TRUE(names.emplace(hf.name, hf.shape).second) << "duplicate " << hf.name;
  }
  // Entries of the release's model.safetensors.index.json (weight_map keys).
  for (const char* name :
       {"model.embed_tokens.weight", "model.final_layernorm.bias", "model.final_layernorm.weight",
        "model.layers.0.attn.A_log", "model.layers.0.attn.D", "model.layers.0.attn.conv1d.bias",
        "model.layers.0.attn.conv1d.weight", "model.layers.0.attn.dt_proj.bias",
        "model.layers.0.attn.dt_proj.weight", "model.layers.0.attn.in_proj.weight",
        "model.layers.0.attn.out_proj.weight", "model.layers.0.attn.x_proj.weight",
        "model.layers.0.input_layernorm.bias", "model.layers.0.post_attention_layernorm.weight",
        "model.layers.0.mlp.fc1.weight", "model.layers.0.mlp.fc2.weight",
        "model.layers.1.attn.Wqkv.bias", "model.layers.1.attn.Wqkv.weight",
        "model.layers.1.attn.inner_cross_attn.lambda_k1",
        "model.layers.1.attn.inner_cross_attn.lambda_q2",
        "model.layers.1.attn.inner_cross_attn.subln.weight", "model.layers.1.attn.out_proj.bias",
        "model.layers.16.attn.A_log", "model.layers.17.attn.Wqkv.weight",
        "model.layers.18.attn.in_proj.weight", "model.layers.18.attn.out_proj.weight",
        "model.layers.19.attn.Wqkv.bias", "model.layers.19.attn.inner_cross_attn.subln.weight",
        "model.layers.20.attn.in_proj.weight"})
    EXPECT_TRUE(names.count(name)) << name;
  // 9 Mamba layers x 9 + 16 self/cross attention layers x 9 + 7 GMUs x 2, 32 layers x 6 (two
  // LayerNorms with bias, fc1, fc2), embedding, final LayerNorm: no lm_head (tied).
  EXPECT_EQ(names.size(), 9u * 9 + 16 * 9 + 7 * 2 + 32 * 6 + 1 + 2);
  EXPECT_EQ(names.count("lm_head.weight"), 0u);
  EXPECT_EQ(names["model.layers.0.attn.conv1d.weight"], (std::vector<int64_t>{5120, 1, 4}));
  EXPECT_EQ(names["model.layers.1.attn.Wqkv.weight"], (std::vector<int64_t>{5120, 2560}));
  EXPECT_EQ(names["model.layers.19.attn.Wqkv.weight"], (std::vector<int64_t>{2560, 2560}));
  EXPECT_EQ(names["model.layers.18.attn.in_proj.weight"], (std::vector<int64_t>{5120, 2560}));
  EXPECT_EQ(names["model.layers.0.mlp.fc1.weight"], (std::vector<int64_t>{20480, 2560}));
}

TEST(HfInterop, ConfigJsonHasTheReleaseKeysAndValues) {
  const ModelConfig c = model_preset("phi4-mini-flash");
  const Json j = parse_json(hf_config_json(c, true), "config.json");
  // Values of the release's config.json.
  EXPECT_EQ(j["architectures"][0], "Phi4FlashForCausalLM");
  EXPECT_EQ(j["model_type"], "phi4flash");
  const std::pair<const char*, int64_t> ints[] = {
      {"hidden_size", 2560},         {"intermediate_size", 10240}, {"num_hidden_layers", 32},
      {"num_attention_heads", 40},   {"num_key_value_heads", 20},  {"sliding_window", 512},
      {"mb_per_layer", 2},           {"vocab_size", 200064},       {"bos_token_id", 199999},
      {"eos_token_id", 199999},      {"pad_token_id", 199999},     {"mamba_d_state", 16},
      {"mamba_d_conv", 4},           {"mamba_expand", 2},          {"mamba_dt_rank", 160}};
  for (const auto& [key, value] : ints) EXPECT_EQ(j[key], value) << key;
  EXPECT_EQ(j["layer_norm_eps"], 1e-5);
  EXPECT_EQ(j["tie_word_embeddings"], true);
  EXPECT_EQ(j["hidden_act"], "silu");
  EXPECT_EQ(j["torch_dtype"], "bfloat16");
  // vLLM's loader reads each layer's attention kind: sliding windows on the odd layers of the
  // first half, full attention elsewhere.
  ASSERT_EQ(j["layer_types"].size(), 32u);
  for (int l = 0; l < 32; ++l)
    EXPECT_EQ(j["layer_types"][l], l < 16 && l % 2 == 1 ? "sliding_attention" : "full_attention")
        << l;
  EXPECT_TRUE(vllm_incompatibilities(c).empty());
  const Json generation = parse_json(hf_generation_config_json(c), "generation_config.json");
  for (const char* key : {"bos_token_id", "eos_token_id", "pad_token_id"})
    EXPECT_EQ(generation[key], 199999) << key;

  // Read as the release's config (without our extra key), it is the same model.
  Json release = j;
  release.erase("sambay_model_config");
  const ModelConfig back = model_config_from_hf(release, "config.json");
  EXPECT_EQ(back.name, "hf-import");
  EXPECT_TRUE(model_config_differences(back, c).empty());
}

TEST(HfInterop, ExportThenImportIsBitExact) {
  ScratchDir dir;
  const ModelConfig c = small_phi4flash();
  const std::vector<float> params = random_params(c);
  export_hf(c, params, dir.file("hf"), export_options(false, false));
  const SafetensorsFile st = open_safetensors(dir.file("hf/model.safetensors"));
  EXPECT_EQ(st.metadata.at(0), (std::pair<std::string, std::string>{"format", "pt"}));
  const HfImport back = import_hf(dir.file("hf"));
  EXPECT_TRUE(same_bits(back.params, params));
  EXPECT_EQ(model_config_to_text(back.model), model_config_to_text(c));  // name included

  // The release's files carry no sambay_model_config: the config comes from the standard keys.
  const std::vector<uint8_t> cfg = read_bytes(dir.file("hf/config.json"));
  std::string text(cfg.begin(), cfg.end());
  const size_t ours = text.find(",\n  \"sambay_model_config\"");
  ASSERT_NE(ours, std::string::npos);
  text = text.substr(0, ours) + "\n}\n";
  write_bytes(dir.file("hf/config.json"), std::vector<uint8_t>(text.begin(), text.end()));
  const HfImport plain = import_hf(dir.file("hf"));
  EXPECT_TRUE(same_bits(plain.params, params));
  EXPECT_TRUE(model_config_differences(plain.model, c).empty());
}

// An untied head: lm_head.weight, tie_word_embeddings false (the release's code loads both), and
// the round trip through sambay's own config and through the standard keys alone.
TEST(HfInterop, UntiedHeadExportsLmHeadAndRoundTrips) {
  ScratchDir dir;
  ModelConfig c = small_phi4flash();
  c.tied_embedding = false;
  EXPECT_TRUE(hf_incompatibilities(c).empty());
  const std::vector<float> params = random_params(c);
  export_hf(c, params, dir.file("hf"), export_options(false, false));
  const SafetensorsFile st = open_safetensors(dir.file("hf/model.safetensors"));
  bool head = false;
  for (const SafetensorsTensor& t : st.tensors)
    if (t.name == "lm_head.weight") head = t.shape == std::vector<int64_t>{c.vocab, c.d_model};
  EXPECT_TRUE(head);
  const Json j = parse_json(hf_config_json(c, false), "config.json");
  EXPECT_FALSE(j.at("tie_word_embeddings").get<bool>());
  const HfImport back = import_hf(dir.file("hf"));
  EXPECT_TRUE(same_bits(back.params, params));
  EXPECT_EQ(model_config_to_text(back.model), model_config_to_text(c));

  // The standard keys alone (the release's files): tie_word_embeddings false reads lm_head.
  const std::vector<uint8_t> cfg = read_bytes(dir.file("hf/config.json"));
  std::string text(cfg.begin(), cfg.end());
  const size_t ours = text.find(",\n  \"sambay_model_config\"");
  ASSERT_NE(ours, std::string::npos);
  const std::string plain_text = text.substr(0, ours) + "\n}\n";
  write_bytes(dir.file("hf/config.json"), std::vector<uint8_t>(plain_text.begin(), plain_text.end()));
  const HfImport plain = import_hf(dir.file("hf"));
  EXPECT_FALSE(plain.model.tied_embedding);
  EXPECT_TRUE(same_bits(plain.params, params));

  // Keys that contradict sambay's config are refused.
  std::string edited = text;
  const std::string key = "\"tie_word_embeddings\": false";
  ASSERT_NE(edited.find(key), std::string::npos);
  edited.replace(edited.find(key), key.size(), "\"tie_word_embeddings\": true");
  write_bytes(dir.file("hf/config.json"), std::vector<uint8_t>(edited.begin(), edited.end()));
  expect_error([&] { import_hf(dir.file("hf")); }, {"tie_word_embeddings is true", "tied_embedding = false"});
}

TEST(HfInterop, Bf16ExportRoundsToNearestEven) {
  ScratchDir dir;
  const ModelConfig c = small_phi4flash();
  const std::vector<float> params = random_params(c);
  export_hf(c, params, dir.file("hf"), export_options(true, false));
  const HfImport back = import_hf(dir.file("hf"));
  for (size_t i = 0; i < params.size(); ++i)
    ASSERT_EQ(back.params[i], to_float(to_bf16(params[i]))) << i;
}

TEST(HfInterop, IncompatibleModelsNeedForceAndStillRoundTrip) {
  ScratchDir dir;
  const ModelConfig c = model_preset("tiny-sambay-da");  // E = 14 is not a multiple of d = 12
  const std::vector<float> params = random_params(c);
  expect_error([&] { export_hf(c, params, dir.file("hf"), export_options(false, false)); },
               {"tiny-sambay-da", "d_inner: 14 is not a multiple of d_model 12", "--force"});
  ModelConfig pp = model_preset("tiny-transformerpp");
  expect_error([&] { export_hf(pp, random_params(pp), dir.file("pp"), export_options(false, false)); },
               {"layers:", "differential:", "attention_bias:", "rope:", "norm:"});
  export_hf(c, params, dir.file("hf"), export_options(false, true));
  const HfImport back = import_hf(dir.file("hf"));
  EXPECT_TRUE(same_bits(back.params, params));
  EXPECT_EQ(model_config_to_text(back.model), model_config_to_text(c));
}

TEST(HfInterop, ShardedReleaseLayoutAndTiedHeadImport) {
  ScratchDir dir;
  const ModelConfig c = small_phi4flash();
  const std::vector<float> params = random_params(c);
  export_hf(c, params, dir.file("one"), export_options(false, false));
  const SafetensorsFile whole = open_safetensors(dir.file("one/model.safetensors"));
  // Two shards and an index, as the release ships, plus an explicit (equal) lm_head.weight.
  std::vector<std::vector<float>> values;
  for (const SafetensorsTensor& t : whole.tensors) {
    values.emplace_back((t.end - t.begin) / 4);
    whole.read_f32(t, values.back().data());
  }
  std::vector<SafetensorsEntry> first, second;
  std::string map;
  for (size_t i = 0; i < whole.tensors.size(); ++i) {
    const SafetensorsTensor& t = whole.tensors[i];
    const bool in_first = i < whole.tensors.size() / 2;
    (in_first ? first : second).push_back({t.name, t.shape, values[i].data()});
    map += fmt::format("{}\"{}\": \"model-0000{}-of-00002.safetensors\"", map.empty() ? "" : ", ",
                       t.name, in_first ? 1 : 2);
    if (t.name == "model.embed_tokens.weight") second.push_back({"lm_head.weight", t.shape, values[i].data()});
  }
  fs::create_directories(dir.file("two"));
  fs::copy(dir.file("one/config.json"), dir.file("two/config.json"));
  write_safetensors(dir.file("two/model-00001-of-00002.safetensors"), first, false, {{"format", "pt"}});
  write_safetensors(dir.file("two/model-00002-of-00002.safetensors"), second, false, {{"format", "pt"}});
  const std::string index = "{\"metadata\": {}, \"weight_map\": {" + map + "}}";
  write_bytes(dir.file("two/model.safetensors.index.json"), std::vector<uint8_t>(index.begin(), index.end()));
  EXPECT_TRUE(same_bits(import_hf(dir.file("two")).params, params));

  // A different head under a config that ties them is refused.
  std::vector<float> other = values[0];
  for (size_t i = 0; i < whole.tensors.size(); ++i)
    if (whole.tensors[i].name == "model.embed_tokens.weight") other = values[i];
  other[3] += 1.0f;
  for (SafetensorsEntry& e : second)
    if (e.name == "lm_head.weight") e.data = other.data();
  write_safetensors(dir.file("two/model-00002-of-00002.safetensors"), second, false, {{"format", "pt"}});
  expect_error([&] { import_hf(dir.file("two")); },
               {"lm_head.weight differs from the embedding", "tie_word_embeddings"});
}

TEST(HfInterop, LargeExportsAreShardedWithAnIndex) {
  ScratchDir dir;
  const ModelConfig c = small_phi4flash();
  const std::vector<float> params = random_params(c);
  const int64_t limit = 4096;  // bytes: several shards for this model
  const HfExportReport r = export_hf(c, params, dir.file("hf"), export_options(false, false, limit));
  const Json index = parse_json(testing::read_text(dir.file("hf/model.safetensors.index.json")), "index");
  std::set<std::string> shards;
  int64_t total = 0;
  for (const auto& [name, file] : index["weight_map"].items()) shards.insert(file.get<std::string>());
  ASSERT_GE(shards.size(), 3u);
  for (const std::string& f : shards) {
    const SafetensorsFile st = open_safetensors(dir.file("hf/" + f));
    EXPECT_TRUE(st.data_bytes <= limit || st.tensors.size() == 1) << f << " " << st.data_bytes;
    total += st.data_bytes;
    for (const SafetensorsTensor& t : st.tensors) EXPECT_EQ(index["weight_map"][t.name], f);
    EXPECT_NE(std::find(r.files.begin(), r.files.end(), f), r.files.end()) << f;
  }
  EXPECT_EQ(*shards.begin(), fmt::format("model-00001-of-{:05}.safetensors", shards.size()));
  EXPECT_EQ(index["metadata"]["total_size"], total);
  EXPECT_EQ(total, build_param_layout(c).total * 4);
  EXPECT_FALSE(fs::exists(dir.file("hf/model.safetensors")));
  EXPECT_TRUE(same_bits(import_hf(dir.file("hf")).params, params));
  // Exporting again, small enough for one file, leaves no index behind to mislead loaders.
  export_hf(c, params, dir.file("hf"), {});
  EXPECT_FALSE(fs::exists(dir.file("hf/model.safetensors.index.json")));
  EXPECT_TRUE(same_bits(import_hf(dir.file("hf")).params, params));
}

TEST(HfInterop, GenerationConfigAndVllmWarnings) {
  ScratchDir dir;
  ModelConfig c = small_phi4flash();  // d_state 4: the release's code runs it, vLLM does not
  const HfExportReport r = export_hf(c, random_params(c), dir.file("hf"), {});
  EXPECT_EQ(r.files, (std::vector<std::string>{"model.safetensors", "config.json",
                                               "generation_config.json"}));
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_NE(r.warnings[0].find("d_state: vLLM fixes 16, this model has 4"), std::string::npos);
  const Json gen = parse_json(testing::read_text(dir.file("hf/generation_config.json")), "gen");
  EXPECT_EQ(gen["eos_token_id"], 36);
  c.d_state = 16, c.d_conv = 3, c.dt_rank = 2, c.d_inner = 48, c.n_kv_heads = 1;
  std::vector<std::string> w = vllm_incompatibilities(c);
  ASSERT_EQ(w.size(), 4u);
  EXPECT_NE(w[0].find("d_conv"), std::string::npos);
  EXPECT_NE(w[1].find("d_inner: vLLM fixes 2 d_model = 32, this model has 48"), std::string::npos);
  EXPECT_NE(w[2].find("dt_rank: vLLM fixes ceil(d_model / 16) = 1"), std::string::npos);
  EXPECT_NE(w[3].find("n_kv_heads"), std::string::npos);
}

TEST(HfInterop, TokenizerFilesMustFitTheModel) {
  ScratchDir dir;
  // A vocabulary of the 256 bytes and two merges; <|eod|> = 300.
  std::string vocab;
  const char* b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (int b = 0; b < 256; ++b)
    vocab += fmt::format("{}{}== {}\n", b64[b >> 2], b64[(b & 3) << 4], b);
  vocab += "YWI= 256\nYmM= 257\n";
  testing::write_bytes(dir.file("v.tiktoken"), std::vector<uint8_t>(vocab.begin(), vocab.end()));
  BpeTokenizerOptions o;
  o.pattern = "\\p{L}+|\\s+|[^\\s\\p{L}]+";
  o.specials = {{"<|eod|>", 300}};
  o.eod = "<|eod|>";
  HfExportOptions options;
  options.tokenizer = BpeTokenizer::load(dir.file("v.tiktoken"), o);
  options.force = true;
  ModelConfig c = model_preset("tiny-sambay-da");
  c.vocab = 301;
  c.eod_token = 300;
  const std::vector<float> params = random_params(c);
  const HfExportReport r = export_hf(c, params, dir.file("hf"), options);
  EXPECT_EQ(r.files.back(), "special_tokens_map.json");
  const Json tok = parse_json(testing::read_text(dir.file("hf/tokenizer.json")), "tokenizer.json");
  EXPECT_EQ(tok["model"]["vocab"]["ab"], 256);
  EXPECT_EQ(tok["model"]["vocab"]["<|eod|>"], 300);
  EXPECT_EQ(tok["model"]["merges"], (Json{"a b", "b c"}));
  EXPECT_EQ(tok["added_tokens"][0]["id"], 300);
  c.vocab = 300;
  expect_error([&] { export_hf(c, random_params(c), dir.file("small"), options); },
               {"v.tiktoken", "301 ids do not fit", "model.vocab = 300"});
  c.vocab = 301;
  c.eod_token = 0;
  expect_error([&] { export_hf(c, params, dir.file("eod"), options); },
               {"ends documents with id 300", "eod_token 0"});
}

TEST(HfInterop, DamagedOrForeignFilesAreRefused) {
  ScratchDir dir;
  const ModelConfig c = small_phi4flash();
  const std::vector<float> params = random_params(c);
  export_hf(c, params, dir.file("hf"), export_options(false, false));
  const std::string st = dir.file("hf/model.safetensors");
  const std::vector<uint8_t> bytes = read_bytes(st);
  // A flipped bit in a tensor name leaves a well-formed file with a name the model lacks.
  const std::string name = "model.layers.3.attn.Wqkv.bias";
  auto at = std::search(bytes.begin(), bytes.end(), name.begin(), name.end());
  ASSERT_NE(at, bytes.end());
  std::vector<uint8_t> renamed = bytes;
  renamed[at - bytes.begin() + 13] ^= 0x02;  // "layers.3" -> "layers.1": a duplicate
  write_bytes(st, renamed);
  expect_error([&] { import_hf(dir.file("hf")); }, {"appears twice"});
  renamed = bytes;
  renamed[at - bytes.begin() + 20] ^= 0x20;  // "Wqkv" -> "wqkv"
  write_bytes(st, renamed);
  expect_error([&] { import_hf(dir.file("hf")); },
               {"model.layers.3.attn.Wqkv.bias", "is missing"});
  write_bytes(st, std::vector<uint8_t>(bytes.begin(), bytes.end() - 4));
  expect_error([&] { import_hf(dir.file("hf")); }, {st, "truncated"});
  write_bytes(st, bytes);

  // A config for another model shape: every tensor is checked against it.
  ModelConfig wider = c;
  wider.d_ff = 28;
  write_bytes(dir.file("hf/config.json"), [&] {
    const std::string t = hf_config_json(wider, false);
    return std::vector<uint8_t>(t.begin(), t.end());
  }());
  expect_error([&] { import_hf(dir.file("hf")); }, {"mlp.fc1.weight", "has shape [48, 16]", "[56, 16]"});
  const std::string foreign = R"({"model_type": "llama", "hidden_size": 16})";
  write_bytes(dir.file("hf/config.json"), std::vector<uint8_t>(foreign.begin(), foreign.end()));
  expect_error([&] { import_hf(dir.file("hf")); }, {"config.json", "model_type is 'llama'"});
}

}  // namespace
}  // namespace sambay
