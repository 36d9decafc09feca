// A synthetic long-context retrieval task in the spirit of the SambaY paper's Phonebook
// benchmark. A document is a phonebook of unique entries, one per line,
//   "Ada Lovelace: 555-1234\n" ...
// then a query for one of them and its answer:
//   "Phone of Ada Lovelace? 555-1234\n"
// Everything is byte tokens (io/byte_tokenizer.h) and follows from (seed, example index).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace sambay {

// Names are a built-in first name and surname; this many distinct ones exist.
int64_t phonebook_max_entries();

struct PhonebookExample {
  std::string prompt;  // the entries and "Phone of <name>? "
  std::string answer;  // "555-dddd"
};

// Example `index` of the stream (seed): num_entries (1..phonebook_max_entries()) entries with
// distinct names and distinct numbers, asking for one chosen at random.
PhonebookExample make_phonebook_example(int64_t num_entries, uint64_t seed, int64_t index);

// Writes examples 0..num_documents-1 as an indexed dataset for training: each document is
// prompt + answer + "\n" followed by kByteEod.
void write_phonebook_dataset(const std::string& prefix, int64_t num_documents, int64_t num_entries,
                             uint64_t seed);

// Exact-match accuracy over examples 0..num_queries-1 of stream (seed): greedy_next returns the
// model's most likely next token after `context`; the answer is decoded token by token from the
// prompt (stopping at the first wrong token) and counts only if every byte matches.
double phonebook_accuracy(
    const std::function<int32_t(const std::vector<int32_t>& context)>& greedy_next,
    int64_t num_queries, int64_t num_entries, uint64_t seed);

}  // namespace sambay
