#include "io/checkpoint_dir.h"

#include "core/check.h"
#include "io/durable_fs.h"
#include "io/mapped_file.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <filesystem>

namespace sambay {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view kPrefix = "step_";

// The step of "step_<digits>" (with `suffix` after the digits), or -1.
int64_t parse_step(const std::string& name, std::string_view suffix) {
  if (name.size() <= kPrefix.size() + suffix.size() || name.rfind(kPrefix, 0) != 0) return -1;
  if (name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) return -1;
  const char* b = name.data() + kPrefix.size();
  const char* e = name.data() + name.size() - suffix.size();
  int64_t step = -1;
  auto [end, ec] = std::from_chars(b, e, step);
  if (ec != std::errc() || end != e || step < 0) return -1;
  return step;
}

}  // namespace

std::string step_dir_name(int64_t step) { return fmt::format("step_{:08}", step); }

std::vector<StepDir> list_checkpoints(const std::string& checkpoints_dir) {
  std::vector<StepDir> out;
  std::error_code ec;
  if (!fs::is_directory(checkpoints_dir, ec)) return out;
  for (const auto& entry : fs::directory_iterator(checkpoints_dir)) {
    if (!entry.is_directory()) continue;
    const int64_t step = parse_step(entry.path().filename().string(), "");
    if (step >= 0) out.push_back({step, entry.path().string()});
  }
  std::sort(out.begin(), out.end(), [](const StepDir& a, const StepDir& b) { return a.step > b.step; });
  return out;
}

void write_latest(const std::string& checkpoints_dir, int64_t step) {
  write_file_durably((fs::path(checkpoints_dir) / "latest").string(), step_dir_name(step) + "\n");
}

std::vector<std::string> prune_checkpoints(const std::string& checkpoints_dir,
                                           int64_t current_step, int keep) {
  SAMBAY_CHECK(keep >= 1, "keep {} checkpoints: at least the newest one must stay", keep);
  std::vector<std::string> removed;
  int kept = 0;
  for (const StepDir& d : list_checkpoints(checkpoints_dir)) {
    const bool newer = d.step > current_step;
    if (!newer && (d.step == current_step || kept < keep)) {
      ++kept;
      continue;
    }
    fs::remove_all(d.path);
    removed.push_back(d.path);
  }
  for (std::string& path : remove_checkpoint_leftovers(checkpoints_dir))
    removed.push_back(std::move(path));
  if (!removed.empty()) fsync_path(checkpoints_dir);
  return removed;
}

std::vector<std::string> remove_checkpoint_leftovers(const std::string& checkpoints_dir) {
  std::vector<std::string> removed;
  std::error_code ec;
  if (!fs::is_directory(checkpoints_dir, ec)) return removed;
  for (const auto& entry : fs::directory_iterator(checkpoints_dir)) {
    const std::string name = entry.path().filename().string();
    const bool unfinished = entry.is_directory() && parse_step(name, ".tmp") >= 0;
    const bool temporary = entry.is_regular_file() && is_atomic_write_temporary(name);
    if (!unfinished && !temporary) continue;
    fs::remove_all(entry.path());
    removed.push_back(entry.path().string());
  }
  return removed;
}

CheckpointLocation locate_checkpoint(const std::string& path) {
  const fs::path p(path);
  std::error_code ec;
  if (!fs::is_directory(p, ec)) fail("{}: not a directory (expected a checkpoint directory)", path);
  if (fs::exists(p / "manifest.txt") || fs::exists(p / "index.h5")) return {"", path};
  if (fs::exists(p / "latest") || !list_checkpoints(path).empty()) return {path, ""};
  if (fs::is_directory(p / "checkpoints")) return {(p / "checkpoints").string(), ""};
  fail("{}: neither a checkpoint (no manifest.txt) nor a directory of checkpoints", path);
}

}  // namespace sambay
