// `sambay ckpt bench`: how fast checkpoints are written and read on this machine's disk,
// against what the disk itself does with the same bytes (one write + fsync, one read).
// Tensor shapes are those of the 1B config; by default only 4 of its 16 layers and a 32K
// vocabulary, so that the buffers (weights, m, v, and a second set to load into) fit in memory;
// --layers 16 --vocab 200064 is the full model (18 GB written).
#include "launch/ckpt_commands.h"

#include "launch/command_line.h"

#include "core/check.h"
#include "core/param_layout.h"
#include "io/checkpoint.h"

#include <boost/program_options.hpp>
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <iostream>

namespace sambay {

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Drops a file's pages from the page cache, so the next read comes from the disk.
void evict(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

void evict_tree(const std::string& dir) {
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) evict(e.path().string());
}

// The disk's own speed: the same bytes written with write() + fsync, then read back.
std::pair<double, double> raw_seconds(const std::string& path, const std::vector<const float*>& buffers,
                                      size_t floats) {
  const Clock::time_point t0 = Clock::now();
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) fail("{}: cannot create: {}", path, std::strerror(errno));
  for (const float* b : buffers) {
    const char* p = reinterpret_cast<const char*>(b);
    size_t left = floats * 4;
    while (left > 0) {
      const ssize_t n = ::write(fd, p, std::min<size_t>(left, 4 << 20));
      if (n <= 0) fail("{}: write failed: {}", path, std::strerror(errno));
      p += n;
      left -= n;
    }
  }
  ::fsync(fd);
  ::close(fd);
  const double write_s = seconds_since(t0);
  evict(path);
  const Clock::time_point t1 = Clock::now();
  fd = ::open(path.c_str(), O_RDONLY);
  std::vector<char> chunk(4 << 20);
  while (::read(fd, chunk.data(), chunk.size()) > 0) {
  }
  ::close(fd);
  return {write_s, seconds_since(t1)};
}

}  // namespace

int cmd_ckpt_bench(int argc, const char* const* argv) {
  std::string dir, preset;
  int64_t layers = 0, vocab = 0;
  int repeats = 0;
  bool keep = false;
  po::options_description o("sambay ckpt bench");
  o.add_options()
      ("dir", po::value(&dir)->default_value("ckpt_bench"), "scratch directory (removed after)")
      ("model", po::value(&preset)->default_value("sambay-da-1b"), "model preset whose shapes are used")
      ("layers", po::value(&layers)->default_value(4), "layers kept (a multiple of 4)")
      ("vocab", po::value(&vocab)->default_value(32064), "vocabulary (embedding rows)")
      ("repeats", po::value(&repeats)->default_value(2), "measurements (the fastest is shown)")
      ("keep", flag(&keep), "keep the files");
  po::variables_map vm;
  if (!parse_command_line(argc, argv, o, {}, vm, "usage: sambay ckpt bench [options]")) return 0;
  if (repeats < 1) fail("option --repeats: must be >= 1, got {}", repeats);
  ModelConfig full = model_preset(preset);
  ModelConfig c = full;
  set_sambay_pattern(c, layers, /*gmu=*/c.memory_layer >= 0);
  c.vocab = vocab;
  validate_model_config(c, "bench model");
  const ParamLayout layout = build_param_layout(c);
  const size_t n = static_cast<size_t>(layout.total);
  std::vector<float> params(n), m(n), v(n);
  init_params(layout, params.data(), 1);
  for (size_t i = 0; i < n; ++i) {
    m[i] = 0.1f * params[i];
    v[i] = params[i] * params[i];
  }
  fs::remove_all(dir);
  fs::create_directories(dir);
  const double gb = 3.0 * 4 * n / 1e9;
  fmt::print("checkpoint bench: {} with {} layers and vocab {}: {:.1f}M parameters, {:.2f} GB "
             "(fp32 weights + AdamW m + v) in {}\n",
             preset, layers, vocab, n / 1e6, gb, dir);

  // Each measurement is repeated and the fastest kept: this disk's first writes to fresh space
  // are often slower than later ones, whoever makes them.
  const std::string text = "# bench\n";
  const std::string checkpoints = (fs::path(dir) / "checkpoints").string();
  std::vector<float> params2(n, 1.0f), m2(n, 1.0f), v2(n, 1.0f);  // as resuming fills the trainer's
  double raw_write_s = 1e30, raw_read_s = 1e30, write_s = 1e30, read_s = 1e30;
  for (int r = 0; r < repeats; ++r) {
    const auto [rw, rr] =
        raw_seconds((fs::path(dir) / "raw.bin").string(), {params.data(), m.data(), v.data()}, n);
    fs::remove(fs::path(dir) / "raw.bin");
    raw_write_s = std::min(raw_write_s, rw);
    raw_read_s = std::min(raw_read_s, rr);

    TrainState state;
    state.step = r + 1;
    Clock::time_point t0 = Clock::now();
    const SaveResult saved = save_checkpoint(checkpoints, {c, text, state, params, m, v}, 1);
    write_s = std::min(write_s, seconds_since(t0));
    evict_tree(dir);
    t0 = Clock::now();
    load_checkpoint_into(saved.dir, c, {params2, m2, v2});
    read_s = std::min(read_s, seconds_since(t0));
    if (params2 != params || m2 != m || v2 != v)
      fail("bench: the reloaded checkpoint differs from what was written");
  }

  const double full_gb = 3.0 * 4 * build_param_layout(full).total / 1e9;
  fmt::print("  {:<34} {:>8} {:>9}\n", "", "seconds", "GB/s");
  fmt::print("  {:<34} {:>8.2f} {:>9.2f}\n", "disk: write + fsync", raw_write_s, gb / raw_write_s);
  fmt::print("  {:<34} {:>8.2f} {:>9.2f}\n", "checkpoint save (atomic, fsynced)", write_s, gb / write_s);
  fmt::print("  {:<34} {:>8.2f} {:>9.2f}\n", "disk: read (cache dropped)", raw_read_s, gb / raw_read_s);
  fmt::print("  {:<34} {:>8.2f} {:>9.2f}\n", "checkpoint load (all verified)", read_s, gb / read_s);
  fmt::print("  save takes {:.2f}x the disk's time for the same bytes; the full {} ({:.1f} GB) "
             "would save in about {:.0f} s here\n",
             write_s / raw_write_s, preset, full_gb, full_gb / (gb / write_s));
  if (!keep) fs::remove_all(dir);
  return 0;
}

}  // namespace sambay
