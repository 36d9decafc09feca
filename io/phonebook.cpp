#include "io/phonebook.h"

#include "core/check.h"
#include "core/philox.h"
#include "io/byte_tokenizer.h"
#include "io/indexed_dataset.h"
#include "io/permutation.h"

#include <array>

namespace sambay {

namespace {

constexpr std::array<const char*, 32> kFirstNames = {
    "Ada",       "Alan",    "Barbara", "Blaise", "Carl",   "Claude",  "Donald",    "Edsger",
    "Emmy",      "Frances", "Grace",   "Hedy",   "Isaac",  "John",    "Katherine", "Leonhard",
    "Lise",      "Marie",   "Niels",   "Nikola", "Paul",   "Richard", "Rosalind",  "Sofia",
    "Srinivasa", "Tim",     "Ursula",  "Vera",   "Werner", "Xavier",  "Yvonne",    "Zhang"};

constexpr std::array<const char*, 32> kSurnames = {
    "Abbott", "Baker",  "Carter",   "Dalton", "Ellis",  "Fischer",  "Garcia", "Hughes",
    "Ibsen",  "Jensen", "Kowalski", "Larsen", "Moreau", "Nakamura", "Okafor", "Petrov",
    "Quinn",  "Rossi",  "Schmidt",  "Tanaka", "Ueda",   "Vargas",   "Weber",  "Xu",
    "Yamada", "Zimmer", "Novak",    "Olsen",  "Patel",  "Silva",    "Horvat", "Lindqvist"};

// derive_key purpose tags for the example streams.
constexpr uint64_t kTagNames = 16, kTagNumbers = 17, kTagQuery = 18;
constexpr int64_t kNumbers = 10000;  // the dddd of 555-dddd

std::string entry_name(uint64_t id) {
  return fmt::format("{} {}", kFirstNames[id / kSurnames.size()], kSurnames[id % kSurnames.size()]);
}

}  // namespace

int64_t phonebook_max_entries() {
  return static_cast<int64_t>(kFirstNames.size() * kSurnames.size());
}

PhonebookExample make_phonebook_example(int64_t num_entries, uint64_t seed, int64_t index) {
  SAMBAY_CHECK(num_entries >= 1 && num_entries <= phonebook_max_entries(),
               "a phonebook holds 1 to {} entries, not {}", phonebook_max_entries(), num_entries);
  SAMBAY_CHECK(index >= 0, "phonebook example index {} is negative", index);
  const uint64_t names = static_cast<uint64_t>(phonebook_max_entries());
  const uint64_t ex = static_cast<uint64_t>(index);
  // The first num_entries elements of two random permutations: distinct names, distinct numbers.
  const uint64_t name_key = derive_key(seed, kTagNames, 0, ex);
  const uint64_t number_key = derive_key(seed, kTagNumbers, 0, ex);
  const int64_t query = static_cast<int64_t>(
      philox_below(derive_key(seed, kTagQuery, 0, ex), 0, 0, static_cast<uint64_t>(num_entries)));
  PhonebookExample out;
  std::string query_name;
  for (int64_t e = 0; e < num_entries; ++e) {
    const std::string name = entry_name(permute_index(static_cast<uint64_t>(e), names, name_key));
    const std::string number =
        fmt::format("555-{:04d}", permute_index(static_cast<uint64_t>(e), kNumbers, number_key));
    out.prompt += fmt::format("{}: {}\n", name, number);
    if (e == query) {
      query_name = name;
      out.answer = number;
    }
  }
  out.prompt += fmt::format("Phone of {}? ", query_name);
  return out;
}

void write_phonebook_dataset(const std::string& prefix, int64_t num_documents, int64_t num_entries,
                             uint64_t seed) {
  SAMBAY_CHECK(num_documents >= 1, "{}: need at least one phonebook document, not {}", prefix,
               num_documents);
  IndexedDatasetWriter writer = begin_indexed_dataset(prefix, token_dtype_for_vocab(kByteVocab));
  for (int64_t d = 0; d < num_documents; ++d) {
    const PhonebookExample ex = make_phonebook_example(num_entries, seed, d);
    std::vector<int32_t> tokens = byte_encode(ex.prompt + ex.answer + "\n");
    tokens.push_back(kByteEod);
    append_document(writer, tokens.data(), static_cast<int64_t>(tokens.size()));
  }
  finish_indexed_dataset(writer);
}

double phonebook_accuracy(
    const std::function<int32_t(const std::vector<int32_t>& context)>& greedy_next,
    int64_t num_queries, int64_t num_entries, uint64_t seed) {
  SAMBAY_CHECK(num_queries >= 1, "phonebook accuracy needs at least one query, not {}",
               num_queries);
  int64_t correct = 0;
  for (int64_t q = 0; q < num_queries; ++q) {
    const PhonebookExample ex = make_phonebook_example(num_entries, seed, q);
    std::vector<int32_t> context = byte_encode(ex.prompt);
    bool right = true;
    for (unsigned char expected : ex.answer) {
      const int32_t next = greedy_next(context);
      if (next != static_cast<int32_t>(expected)) {
        right = false;
        break;
      }
      context.push_back(next);
    }
    correct += right;
  }
  return static_cast<double>(correct) / static_cast<double>(num_queries);
}

}  // namespace sambay
