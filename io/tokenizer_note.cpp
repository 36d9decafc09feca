#include "io/tokenizer_note.h"

#include "core/check.h"
#include "io/byte_tokenizer.h"
#include "io/durable_fs.h"
#include "io/json.h"
#include "io/sampler.h"

#include <filesystem>

namespace sambay {

void write_tokenizer_note(const std::string& data_prefix, const BpeTokenizer* bpe,
                          bool allow_special) {
  Json note;
  if (bpe) {
    note["tokenizer"] = bpe->name();
    note["file"] = std::filesystem::absolute(bpe->path()).string();
    note["fingerprint"] = fmt::format("{:08x}", bpe->vocab().fingerprint);
    note["vocab_size"] = bpe->vocab_size();
    note["eod"] = bpe->eod();
    note["pattern"] = bpe->pattern();
    Json specials = Json::object();
    for (const SpecialToken& s : bpe->specials()) specials[s.text] = s.id;
    note["special_tokens"] = specials;
    note["allow_special"] = allow_special;
  } else {
    note["tokenizer"] = "byte";
    note["vocab_size"] = kByteVocab;
    note["eod"] = kByteEod;
  }
  write_file_durably(data_prefix + ".tokenizer.json", note.dump(2) + "\n");
}

std::optional<TokenizerNote> read_tokenizer_note(const std::string& data_prefix) {
  TokenizerNote n;
  n.path = data_prefix + ".tokenizer.json";
  if (!std::filesystem::exists(n.path)) return std::nullopt;
  const Json j = parse_json(read_text_file(n.path), n.path);
  auto key = [&](const char* k) -> const Json& {
    const Json* v = json_find(j, k);
    if (!v) fail("{}: key '{}' is missing", n.path, k);
    return *v;
  };
  n.tokenizer = json_string(key("tokenizer"), n.path + ": tokenizer");
  n.vocab_size = json_int(key("vocab_size"), n.path + ": vocab_size");
  n.eod = static_cast<int32_t>(json_int(key("eod"), n.path + ": eod"));
  if (n.tokenizer == "byte") return n;
  n.file = json_string(key("file"), n.path + ": file");
  n.fingerprint = json_string(key("fingerprint"), n.path + ": fingerprint");
  n.pattern = json_string(key("pattern"), n.path + ": pattern");
  const Json& specials = key("special_tokens");
  if (!specials.is_object()) fail("{}: special_tokens is not an object", n.path);
  for (const auto& [text, id] : specials.items()) {
    n.specials.push_back({text, static_cast<int32_t>(json_int(id, n.path + ": special_tokens." + text))});
    if (n.specials.back().id == n.eod) n.eod_text = text;
  }
  if (n.eod_text.empty()) fail("{}: eod {} is none of the special_tokens", n.path, n.eod);
  return n;
}

std::optional<TokenizerNote> check_data_tokenizer(const std::vector<std::string>& data,
                                                  const ModelConfig& model) {
  std::optional<TokenizerNote> common;
  for (const std::string& entry : data) {
    std::optional<TokenizerNote> note = read_tokenizer_note(parse_data_source(entry).path);
    if (!note) continue;
    if (common && (note->tokenizer != common->tokenizer || note->fingerprint != common->fingerprint ||
                   note->eod != common->eod))
      fail("option --data: {} says tokenizer {} (eod {}), {} says {} (eod {}): blended datasets "
           "must come from one tokenizer",
           common->path, common->tokenizer, common->eod, note->path, note->tokenizer, note->eod);
    if (note->vocab_size > model.vocab)
      fail("option --data: {} has ids up to {} ({}), model.vocab is {}: set --model.vocab {} or "
           "more",
           note->path, note->vocab_size - 1, note->tokenizer, model.vocab, note->vocab_size);
    if (model.eod_token >= 0 && note->eod != model.eod_token)
      fail("option --data: {} ends documents with id {} ({}), model.eod_token is {}: set "
           "--model.eod_token {}",
           note->path, note->eod, note->tokenizer, model.eod_token, note->eod);
    if (!common) common = std::move(note);
  }
  return common;
}

std::shared_ptr<const BpeTokenizer> load_noted_tokenizer(const TokenizerNote& note,
                                                         const std::string& file) {
  SAMBAY_CHECK(note.tokenizer != "byte", "{}: the byte tokenizer has no vocabulary file", note.path);
  const std::string path = file.empty() ? note.file : file;
  if (!std::filesystem::exists(path))
    fail("{}: the dataset was tokenized with {}, which is not there any more (--tokenizer FILE "
         "names where it is now)",
         note.path, path);
  BpeTokenizerOptions o;
  o.pattern = note.tokenizer == "custom" ? note.pattern : "";
  o.specials = note.specials;
  o.eod = note.eod_text;
  std::shared_ptr<const BpeTokenizer> t = BpeTokenizer::load(path, o);
  if (fmt::format("{:08x}", t->vocab().fingerprint) != note.fingerprint)
    fail("{}: {} is not the vocabulary the dataset was made with (fingerprint {:08x}, the note "
         "says {})",
         note.path, path, t->vocab().fingerprint, note.fingerprint);
  return t;
}

}  // namespace sambay
