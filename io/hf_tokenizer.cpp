#include "io/hf_tokenizer.h"

#include "core/check.h"
#include "io/durable_fs.h"
#include "io/json.h"

#include <algorithm>
#include <array>
#include <filesystem>
#include <map>
#include <tuple>

namespace sambay {

namespace {

// GPT-2's byte-level alphabet: printable bytes stand for themselves, the other 68 bytes for
// the code points 256, 257, ... in byte order. Each entry is the character's UTF-8.
std::array<std::string, 256> byte_characters() {
  std::array<std::string, 256> out;
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
    const int cp = printable ? b : next++;
    std::string& s = out[b];
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  return out;
}

}  // namespace

std::vector<std::string> write_hf_tokenizer(const BpeTokenizer& tokenizer, int32_t eod,
                                            int64_t max_length, const std::string& dir) {
  const BpeVocab& v = tokenizer.vocab();
  const std::array<std::string, 256> chars = byte_characters();
  auto text_of = [&](std::string_view bytes) {
    std::string s;
    for (char c : bytes) s += chars[static_cast<unsigned char>(c)];
    return s;
  };

  // Built as a std::map and converted once: ordered_json inserts by linear search.
  std::map<std::string, int32_t> vocab;
  Json merges = Json::array();
  std::vector<std::tuple<int32_t, int32_t, size_t>> splits;  // (rank left, rank right, at)
  for (int32_t r = 0; r < v.size(); ++r) {
    const std::string_view t = v.token(r);
    vocab[text_of(t)] = r;
    splits.clear();
    for (size_t at = 1; at < t.size(); ++at) {
      const int32_t a = v.find(t.data(), at), b = v.find(t.data() + at, t.size() - at);
      if (a >= 0 && b >= 0) splits.emplace_back(a, b, at);
    }
    std::sort(splits.begin(), splits.end());
    for (const auto& [a, b, at] : splits)
      merges.push_back(text_of(t.substr(0, at)) + " " + text_of(t.substr(at)));
  }

  std::string eod_text;
  Json added = Json::array();
  Json decoder = Json::object();
  for (const SpecialToken& s : tokenizer.specials()) {
    if (s.id == eod) eod_text = s.text;
    vocab[s.text] = s.id;  // an added token keeps its id only when the vocabulary has it
    added.push_back({{"id", s.id},
                     {"content", s.text},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
    decoder[std::to_string(s.id)] = {{"content", s.text},  {"lstrip", false},
                                     {"normalized", false}, {"rstrip", false},
                                     {"single_word", false}, {"special", true}};
  }
  SAMBAY_CHECK(!eod_text.empty(), "the end-of-document id {} is not a special token of {}", eod,
               tokenizer.path());

  const Json json = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"},
           {"pattern", {{"Regex", tokenizer.hf_pattern()}}},
           {"behavior", "Isolated"},
           {"invert", false}},
          {{"type", "ByteLevel"},
           {"add_prefix_space", false},
           {"trim_offsets", true},
           {"use_regex", false}}}}}},
      {"post_processor", nullptr},
      {"decoder",
       {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", true},
        {"vocab", vocab},
        {"merges", merges}}}};
  const Json config = {{"add_bos_token", false},
                       {"add_eos_token", false},
                       {"add_prefix_space", false},
                       {"added_tokens_decoder", decoder},
                       {"bos_token", eod_text},
                       {"eos_token", eod_text},
                       {"pad_token", eod_text},
                       {"unk_token", eod_text},
                       {"clean_up_tokenization_spaces", false},
                       {"model_max_length", max_length},
                       {"tokenizer_class", "PreTrainedTokenizerFast"},
                       {"sambay_vocabulary", tokenizer.name()}};
  const Json special_map = {
      {"bos_token", eod_text}, {"eos_token", eod_text}, {"pad_token", eod_text}, {"unk_token", eod_text}};
  namespace fs = std::filesystem;
  write_file_durably((fs::path(dir) / "tokenizer.json").string(), json.dump() + "\n");
  write_file_durably((fs::path(dir) / "tokenizer_config.json").string(), config.dump(2) + "\n");
  write_file_durably((fs::path(dir) / "special_tokens_map.json").string(), special_map.dump(2) + "\n");
  return {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"};
}

}  // namespace sambay
