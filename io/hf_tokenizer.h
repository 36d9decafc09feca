// A BPE tokenizer as Hugging Face files, so that an exported model loads with its tokenizer
// (transformers' AutoTokenizer, vLLM): tokenizer.json (a byte-level BPE of the `tokenizers`
// library), tokenizer_config.json and special_tokens_map.json.
//
// tiktoken's ranks become a vocabulary and a merge list: tokens are written in GPT-2's
// byte-to-character mapping, and every split of a token into two tokens is a merge, ordered by
// the rank of the token it makes. Applying the lowest merge first is then tiktoken's rule
// (lowest-ranked concatenation first), and "ignore_merges" makes a piece that is itself a token
// that token, as tiktoken does. The pre-tokenizer is the vocabulary's own regex.
#pragma once

#include "io/bpe_tokenizer.h"

#include <string>
#include <vector>

namespace sambay {

// Writes the three files into `dir` (which exists); returns their names. `eod` is the id that
// ends documents (bos = eos = pad, as in Phi-4-mini-flash); `max_length` the model's context.
std::vector<std::string> write_hf_tokenizer(const BpeTokenizer& tokenizer, int32_t eod,
                                            int64_t max_length, const std::string& dir);

}  // namespace sambay
