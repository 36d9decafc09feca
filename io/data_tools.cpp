#include "io/data_tools.h"

#include "core/check.h"
#include "io/byte_tokenizer.h"
#include "io/indexed_dataset.h"
#include "io/token_source.h"
#include "io/tokenizer_note.h"

#include <fmt/ranges.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <future>
#include <limits>
#include <mutex>
#include <string_view>
#include <thread>

namespace sambay {

namespace {

using Clock = std::chrono::steady_clock;

// Documents per batch handed to an encoding thread: large enough that handing over costs
// nothing, small enough that every thread gets work and memory stays bounded (batches in flight:
// two per thread).
constexpr size_t kBatchBytes = size_t{4} << 20;

// One batch's result: its documents' tokens back to back, EOD included.
struct EncodedBatch {
  std::vector<int32_t> tokens;
  std::vector<int64_t> lengths;
  int64_t bytes = 0, empty = 0, unmatched = 0;
};

// What one encoding thread owns.
struct ThreadEncoder {
  std::unique_ptr<BpeEncoder> bpe;  // null: the byte tokenizer
  std::string scratch;
};

EncodedBatch encode_batch(const DocumentBatch& batch, ThreadEncoder& enc,
                          const TokenizeOptions& options, const std::vector<std::string>& inputs,
                          int32_t eod) {
  EncodedBatch out;
  out.tokens.reserve(batch.bytes.size() / 3);
  const int64_t unmatched_before = enc.bpe ? enc.bpe->unmatched_bytes() : 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    const std::string_view text = document_text(batch, i, options.json_key, inputs, enc.scratch);
    if (text.empty()) {
      out.empty += 1;
      continue;
    }
    const size_t before = out.tokens.size();
    if (!enc.bpe) {
      for (char c : text) out.tokens.push_back(static_cast<unsigned char>(c));
    } else if (options.allow_special) {
      enc.bpe->encode_with_specials(text, out.tokens);
    } else {
      enc.bpe->encode_ordinary(text, out.tokens);
    }
    out.tokens.push_back(eod);
    out.lengths.push_back(static_cast<int64_t>(out.tokens.size() - before));
    out.bytes += static_cast<int64_t>(text.size());
  }
  if (enc.bpe) out.unmatched = enc.bpe->unmatched_bytes() - unmatched_before;
  return out;
}

// A fixed set of threads, each with its own encoder, taking batches in turn. Results come back
// as futures, which the caller consumes in submission order.
class EncoderPool {
 public:
  EncoderPool(int threads, const std::shared_ptr<const BpeTokenizer>& bpe) {
    for (int t = 0; t < threads; ++t)
      workers_.emplace_back([this, bpe] {
        ThreadEncoder enc;
        if (bpe) enc.bpe = std::make_unique<BpeEncoder>(bpe);
        for (;;) {
          std::packaged_task<EncodedBatch(ThreadEncoder&)> job;
          {
            std::unique_lock lock(mutex_);
            ready_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
            if (jobs_.empty()) return;
            job = std::move(jobs_.front());
            jobs_.pop_front();
          }
          job(enc);
        }
      });
  }
  ~EncoderPool() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    ready_.notify_all();
    for (std::thread& w : workers_) w.join();
  }
  std::future<EncodedBatch> submit(std::packaged_task<EncodedBatch(ThreadEncoder&)> job) {
    std::future<EncodedBatch> result = job.get_future();
    {
      std::lock_guard lock(mutex_);
      jobs_.push_back(std::move(job));
    }
    ready_.notify_one();
    return result;
  }

 private:
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::packaged_task<EncodedBatch(ThreadEncoder&)>> jobs_;
  bool stop_ = false;
};

std::string human_bytes(double b) {
  if (b >= 1e9) return fmt::format("{:.2f} GB", b / 1e9);
  if (b >= 1e6) return fmt::format("{:.1f} MB", b / 1e6);
  return fmt::format("{:.0f} kB", b / 1e3);
}

std::string human_count(double n) {
  if (n >= 1e9) return fmt::format("{:.2f}G", n / 1e9);
  if (n >= 1e6) return fmt::format("{:.2f}M", n / 1e6);
  if (n >= 1e4) return fmt::format("{:.1f}k", n / 1e3);
  return fmt::format("{:.0f}", n);
}

std::string eta_text(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = static_cast<int64_t>(s + 0.5);
  if (t >= 3600) return fmt::format("{}h{:02}m", t / 3600, (t % 3600) / 60);
  if (t >= 60) return fmt::format("{}m{:02}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}

// The progress line: rewritten in place on a terminal, a new line every 30 s in a log.
class Progress {
 public:
  explicit Progress(bool on) : on_(on), tty_(on && isatty(STDERR_FILENO)) {}
  void update(const CorpusReader& reader, const TokenizeReport& r, bool final) {
    if (!on_) return;
    const double now = std::chrono::duration<double>(Clock::now() - start_).count();
    if (!final && now - last_ < (tty_ ? 1.0 : 30.0)) return;
    last_ = now;
    const double done = static_cast<double>(reader.bytes_done());
    const double total = static_cast<double>(reader.bytes_total());
    const double rate = now > 0 ? done / now : 0;
    std::string line = fmt::format(
        "tokenize: {} / {} ({:.0f}%) | {} docs | {} tokens | {:.1f} MB/s | {} tok/s | ETA {}",
        human_bytes(done), human_bytes(total), total > 0 ? 100 * done / total : 100.0,
        human_count(static_cast<double>(r.documents)), human_count(static_cast<double>(r.tokens)),
        rate / 1e6, human_count(now > 0 ? static_cast<double>(r.tokens) / now : 0),
        final ? "0s" : eta_text(rate > 0 ? (total - done) / rate : NAN));
    if (tty_)
      fmt::print(stderr, "\r{:<110}{}", line, final ? "\n" : "");
    else
      fmt::print(stderr, "{}\n", line);
    std::fflush(stderr);
  }

 private:
  bool on_, tty_;
  Clock::time_point start_ = Clock::now();
  double last_ = 0;
};

}  // namespace

TokenizeReport tokenize_corpus(const std::vector<std::string>& inputs,
                               const std::string& out_prefix, const TokenizeOptions& options) {
  SAMBAY_CHECK(!inputs.empty(), "no input files to tokenize into {}", out_prefix);
  const Clock::time_point t0 = Clock::now();
  std::shared_ptr<const BpeTokenizer> bpe;
  if (options.tokenizer != "byte") bpe = BpeTokenizer::load(options.tokenizer, options.bpe);
  const int32_t eod = bpe ? bpe->eod() : kByteEod;
  const int64_t vocab = bpe ? bpe->vocab_size() : kByteVocab;
  const CorpusFormat* format = options.format ? &*options.format : nullptr;
  CorpusReader reader(inputs, format, options.split);
  const int threads = options.threads > 0
                          ? options.threads
                          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));

  TokenizeReport report;
  IndexedDatasetWriter writer = begin_indexed_dataset(out_prefix, token_dtype_for_vocab(vocab));
  Progress progress(options.progress);
  {
    EncoderPool pool(threads, bpe);
    std::deque<std::future<EncodedBatch>> in_flight;
    auto write_oldest = [&] {
      EncodedBatch b = in_flight.front().get();  // rethrows an encoding thread's error
      in_flight.pop_front();
      const int32_t* at = b.tokens.data();
      for (int64_t len : b.lengths) {
        append_document(writer, at, len);
        at += len;
      }
      report.documents += static_cast<int64_t>(b.lengths.size());
      report.tokens += static_cast<int64_t>(b.tokens.size());
      report.bytes += b.bytes;
      report.empty_skipped += b.empty;
      report.unmatched_bytes += b.unmatched;
      progress.update(reader, report, false);
    };
    for (;;) {
      auto batch = std::make_shared<DocumentBatch>();
      if (!reader.next(*batch, kBatchBytes)) break;
      in_flight.push_back(pool.submit(std::packaged_task<EncodedBatch(ThreadEncoder&)>(
          [batch, &options, &inputs, eod](ThreadEncoder& enc) {
            return encode_batch(*batch, enc, options, inputs, eod);
          })));
      if (in_flight.size() >= static_cast<size_t>(2 * threads)) write_oldest();
    }
    while (!in_flight.empty()) write_oldest();
  }
  finish_indexed_dataset(writer);
  write_tokenizer_note(out_prefix, bpe.get(), options.allow_special);
  report.files = reader.stats().files;
  report.empty_skipped += reader.stats().empty_files;
  report.blank_lines = reader.stats().blank_lines;
  report.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  progress.update(reader, report, true);
  return report;
}

std::string to_string(const TokenizeReport& r) {
  std::string s =
      fmt::format("{} files -> {} documents, {} tokens", r.files, r.documents, r.tokens);
  std::vector<std::string> notes;
  if (r.empty_skipped > 0) notes.push_back(fmt::format("{} empty documents skipped", r.empty_skipped));
  if (r.blank_lines > 0) notes.push_back(fmt::format("{} blank lines skipped", r.blank_lines));
  if (r.unmatched_bytes > 0)
    notes.push_back(fmt::format("{} bytes of invalid UTF-8 kept as byte tokens", r.unmatched_bytes));
  if (!notes.empty()) s += " (" + fmt::format("{}", fmt::join(notes, "; ")) + ")";
  return s;
}

std::string dataset_stats(const std::string& path) {
  const TokenSource src = open_token_source(path);
  const int64_t n = num_tokens(src), docs = num_documents(src);
  std::string out;
  out += fmt::format("path:      {}\n", path);
  out += fmt::format(
      "format:    {}, {} tokens\n",
      src.format == TokenFormat::indexed ? "Megatron indexed dataset" : "sambay token file",
      token_dtype_name(token_dtype(src)));
  if (src.format == TokenFormat::flat) out += fmt::format("eod token: {}\n", src.flat.eod);
  out += fmt::format("tokens:    {}\n", n);

  // Document lengths, with a histogram over power-of-two buckets: bucket b holds [2^(b-1), 2^b),
  // bucket 0 the empty documents.
  int64_t min_len = std::numeric_limits<int64_t>::max(), max_len = 0;
  std::vector<int64_t> buckets(64, 0);
  for (int64_t d = 0; d < docs; ++d) {
    const int64_t len = document_start(src, d + 1) - document_start(src, d);
    min_len = std::min(min_len, len);
    max_len = std::max(max_len, len);
    int b = 0;
    while (b < 63 && (int64_t{1} << b) <= len) ++b;
    buckets[b] += 1;
  }
  out += fmt::format("documents: {}\n", docs);
  if (docs > 0) {
    out += fmt::format("doc length: min {}, mean {:.1f}, max {}\n", min_len,
                       static_cast<double>(n) / static_cast<double>(docs), max_len);
    out += "doc length histogram:\n";
    for (int b = 0; b < 64; ++b) {
      if (buckets[b] == 0) continue;
      std::string range =
          b == 0 ? "0" : fmt::format("[{}, {})", int64_t{1} << (b - 1), int64_t{1} << b);
      out += fmt::format("  {:>20}: {:>12} ({:5.1f}%)\n", range, buckets[b],
                         100.0 * static_cast<double>(buckets[b]) / static_cast<double>(docs));
    }
  }

  // Token ids: range and how many distinct ids occur (tracked below 2^24, above any real vocab).
  constexpr int64_t kTrackedIds = int64_t{1} << 24;
  std::vector<uint8_t> seen;
  int32_t min_id = std::numeric_limits<int32_t>::max(), max_id = -1;
  bool untracked = false;
  std::vector<int32_t> block(std::min<int64_t>(n, int64_t{1} << 20));
  for (int64_t at = 0; at < n; at += static_cast<int64_t>(block.size())) {
    const int64_t m = std::min<int64_t>(static_cast<int64_t>(block.size()), n - at);
    read_tokens(src, at, m, block.data());
    for (int64_t i = 0; i < m; ++i) {
      const int32_t t = block[i];
      min_id = std::min(min_id, t);
      max_id = std::max(max_id, t);
      if (t >= kTrackedIds) {
        untracked = true;
        continue;
      }
      if (static_cast<size_t>(t) >= seen.size()) seen.resize(static_cast<size_t>(t) + 1, 0);
      seen[t] = 1;
    }
  }
  if (n > 0) {
    int64_t distinct = std::count(seen.begin(), seen.end(), uint8_t{1});
    out += fmt::format("token ids: {}..{}, {}{} distinct\n", min_id, max_id, untracked ? ">" : "",
                       distinct);
  }
  return out;
}

}  // namespace sambay
