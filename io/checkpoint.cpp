#include "io/checkpoint.h"

#include "core/config_file.h"
#include "core/param_layout.h"
#include "core/utc_time.h"
#include "io/checkpoint_dir.h"
#include "io/checkpoint_manifest.h"
#include "io/crc32c.h"
#include "io/durable_fs.h"
#include "sambay_version.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <sys/statvfs.h>

#include <filesystem>
#include <map>
#include <random>

namespace sambay {

namespace fs = std::filesystem;

namespace {

constexpr const char* kIndexFormat = "sambay-checkpoint";
constexpr const char* kRankFormat = "sambay-checkpoint-rank";
constexpr const char* kIndexName = "index.h5";
constexpr const char* kTensorGroups[] = {"model/", "optim/m/", "optim/v/"};

std::string rank_file_name(int64_t rank) { return fmt::format("rank_{:05}.h5", rank); }

// The index's tensors: every group's tensors in layout order, each with every rank's pieces
// (in rank order, and in a rank file in the order written, which names their datasets).
std::vector<GlobalTensor> global_tensors(
    const ParamLayout& layout, const std::vector<std::vector<StoredPiece>>& pieces_by_rank) {
  std::vector<GlobalTensor> out;
  for (const char* group : kTensorGroups)
    for (const ParamSpec& p : layout.params)
      out.push_back({group + tensor_group_path(p.name), StoredDType::f32, p.shape, {}});
  const size_t n = layout.params.size();
  for (size_t r = 0; r < pieces_by_rank.size(); ++r) {
    std::vector<int> count(n, 0);
    for (const StoredPiece& piece : pieces_by_rank[r]) {
      SAMBAY_CHECK(piece.param >= 0 && size_t(piece.param) < n, "piece of parameter {} of {}",
                   piece.param, n);
      const int k = count[piece.param]++;
      for (size_t g = 0; g < std::size(kTensorGroups); ++g) {
        GlobalTensor& t = out[g * n + piece.param];
        t.pieces.push_back({rank_file_name(int64_t(r)), piece.box, piece_dataset(t.path, k)});
      }
    }
  }
  return out;
}

void write_placement(hid_t obj, const ParallelPlacement& p, const std::string& where) {
  h5::write_attr(obj, "dp", p.dp, where);
  h5::write_attr(obj, "tp", p.tp, where);
  h5::write_attr(obj, "cp", p.cp, where);
  h5::write_attr(obj, "world_size", p.world_size(), where);
}

void write_train_state(hid_t g, const TrainState& s, const std::string& where) {
  h5::write_attr(g, "step", s.step, where);
  h5::write_attr(g, "consumed_samples", s.consumed_samples, where);
  h5::write_attr(g, "consumed_tokens", s.consumed_tokens, where);
  h5::write_attr(g, "data_sources", s.data_sources, where);
  h5::write_attr_u64(g, "data_seed", s.data_seed, where);
  h5::write_attr(g, "seq_len", s.seq_len, where);
  h5::write_attr(g, "global_batch", s.global_batch, where);
  h5::write_attr(g, "valid_fraction", s.valid_fraction, where);
  h5::write_attr(g, "schedule", s.schedule, where);
  h5::write_attr(g, "peak_lr", s.peak_lr, where);
  h5::write_attr(g, "last_lr", s.last_lr, where);
  h5::write_attr(g, "min_lr_ratio", s.min_lr_ratio, where);
  h5::write_attr(g, "decay_fraction", s.decay_fraction, where);
  h5::write_attr(g, "warmup", s.warmup, where);
  h5::write_attr(g, "total_steps", s.total_steps, where);
  h5::write_attr_u64(g, "init_seed", s.init_seed, where);
  h5::write_attr(g, "threads", s.threads, where);
}

TrainState read_train_state(hid_t g, const std::string& where) {
  TrainState s;
  s.step = h5::read_attr_int(g, "step", where);
  s.consumed_samples = h5::read_attr_int(g, "consumed_samples", where);
  s.consumed_tokens = h5::read_attr_int(g, "consumed_tokens", where);
  s.data_sources = h5::read_attr_string(g, "data_sources", where);
  s.data_seed = h5::read_attr_u64(g, "data_seed", where);
  s.seq_len = h5::read_attr_int(g, "seq_len", where);
  s.global_batch = h5::read_attr_int(g, "global_batch", where);
  s.valid_fraction = h5::read_attr_double(g, "valid_fraction", where);
  s.schedule = h5::read_attr_string(g, "schedule", where);
  s.peak_lr = h5::read_attr_double(g, "peak_lr", where);
  s.last_lr = h5::read_attr_double(g, "last_lr", where);
  s.min_lr_ratio = h5::read_attr_double(g, "min_lr_ratio", where);
  s.decay_fraction = h5::read_attr_double(g, "decay_fraction", where);
  s.warmup = h5::read_attr_int(g, "warmup", where);
  s.total_steps = h5::read_attr_int(g, "total_steps", where);
  s.init_seed = h5::read_attr_u64(g, "init_seed", where);
  s.threads = h5::read_attr_int(g, "threads", where);
  return s;
}

void write_index(const std::string& path, const CheckpointMeta& v,
                 const std::vector<GlobalTensor>& tensors) {
  h5::Id f = h5::create_file(path);
  h5::write_attr(f, "format", std::string(kIndexFormat), path);
  h5::write_attr(f, "format_version", kCheckpointFormatVersion, path);
  h5::write_attr(f, "run_id", v.run_id, path);
  h5::write_attr(f, "sambay_version", std::string(SAMBAY_VERSION), path);
  h5::write_attr(f, "git_commit", std::string(SAMBAY_GIT_COMMIT), path);
  h5::write_attr(f, "created", utc_now(), path);
  h5::write_attr(f, "step", v.state.step, path);
  h5::write_text(f, "config/model", model_config_to_text(v.model), path);
  h5::write_text(f, "config/train", v.train_config_text, path);
  {
    h5::Id g = h5::create_group(f, "train_state", path);
    write_train_state(g, v.state, path + ":train_state");
    h5::Id p = h5::create_group(f, "parallel", path);
    write_placement(p, v.placement, path + ":parallel");
  }
  write_virtual_tensors(f, tensors, path);
  h5::close_file(f, path);
  fsync_path(path);
}

// The content checksum of a rank file (io/checkpoint_manifest.h): CRC-32C of the lines
// "run <id>", "step <n>", "rank <r>", then "<dataset> <crc32c>" for every dataset in HDF5's
// name order. The datasets' own checksums cover their bytes, so this binds the whole file to
// its checkpoint without reading the tensors.
uint32_t rank_file_checksum(hid_t f, const std::string& path, const std::string& run_id,
                            int64_t step, int64_t rank) {
  std::string text = fmt::format("run {}\nstep {}\nrank {}\n", run_id, step, rank);
  for (const std::string& name : h5::list_datasets(f, path)) {
    h5::Id d(h5::check(H5Dopen2(f, name.c_str(), H5P_DEFAULT), path, "open " + name), H5Dclose);
    text += fmt::format("{} {:08x}\n", name, h5::read_attr_u32(d, "crc32c", path + ":" + name));
  }
  return crc32c(text.data(), text.size());
}

}  // namespace

std::string new_run_id() {
  std::random_device rd;
  std::string id;
  for (int i = 0; i < 4; ++i) id += fmt::format("{:08x}", static_cast<uint32_t>(rd()));
  return id;
}

ModelConfig parse_model_config_text(const std::string& text, const std::string& where) {
  ModelConfig c;
  for (const ConfigEntry& e : parse_config_text(text, where).entries) {
    if (e.key.rfind("model.", 0) != 0)
      fail("{}:{}: '{}' is not a model field (model.<field> = <value>)", where, e.line, e.key);
    set_model_config_field(c, e.key.substr(6), e.value, where);
  }
  validate_model_config(c, where);
  return c;
}

std::string tensor_group_path(const std::string& param_name) {
  std::string out;
  size_t start = 0;
  while (start <= param_name.size()) {
    size_t dot = param_name.find('.', start);
    if (dot == std::string::npos) dot = param_name.size();
    const std::string part = param_name.substr(start, dot - start);
    const bool index = !part.empty() && part.find_first_not_of("0123456789") == std::string::npos;
    if (!out.empty()) out += index ? '.' : '/';
    out += part;
    start = dot + 1;
  }
  return out;
}

namespace {

// File system failures (disk full, permissions) as sambay errors naming the path.
template <typename Fn>
auto with_fs_errors(const std::string& where, Fn fn) {
  try {
    return fn();
  } catch (const fs::filesystem_error& e) {
    fail("{}: {}", where, e.what());
  }
}

std::string begin_checkpoint_unchecked(const std::string& checkpoints_dir, int64_t step,
                                      double tensor_bytes) {
  const fs::path root(checkpoints_dir), tmp = root / (step_dir_name(step) + ".tmp");
  fs::create_directories(root);
  // The tensors alone need this much: a file system with less free space cannot take the
  // checkpoint, and is reported before a byte is written.
  if (struct statvfs fsinfo {}; ::statvfs(root.c_str(), &fsinfo) == 0) {
    const double free_bytes = double(fsinfo.f_bavail) * double(fsinfo.f_frsize);
    if (free_bytes < tensor_bytes)
      fail("{}: the checkpoint of step {} needs at least {:.1f} MB and the file system has "
           "{:.1f} MB free: No space left on device",
           checkpoints_dir, step, tensor_bytes / 1e6, free_bytes / 1e6);
  }
  fs::remove_all(tmp);
  fs::create_directory(tmp);
  return tmp.string();
}

RankFileResult write_rank_file_unchecked(const std::string& tmp_dir, const CheckpointMeta& meta,
                                         const RankPart& part) {
  const ParamLayout layout = build_param_layout(meta.model);
  const std::string rank_path = (fs::path(tmp_dir) / rank_file_name(part.rank)).string();
  {
    ShardFileWriter w(rank_path);
    h5::write_attr(w.file(), "format", std::string(kRankFormat), rank_path);
    h5::write_attr(w.file(), "format_version", kCheckpointFormatVersion, rank_path);
    h5::write_attr(w.file(), "run_id", meta.run_id, rank_path);
    h5::write_attr(w.file(), "step", meta.state.step, rank_path);
    h5::write_attr(w.file(), "rank", part.rank, rank_path);
    write_placement(w.file(), meta.placement, rank_path);
    const std::span<const float> buffers[] = {part.params, part.adam_m, part.adam_v};
    for (size_t g = 0; g < std::size(kTensorGroups); ++g) {
      std::vector<int> count(layout.params.size(), 0);
      for (const StoredPiece& piece : *part.pieces) {
        const ParamSpec& p = layout.params[piece.param];
        SAMBAY_CHECK(piece.pos >= 0 && piece.pos + piece.box.numel() <=
                                           static_cast<int64_t>(buffers[g].size()),
                     "{}: piece of {} at {} outside a buffer of {}", rank_path, p.name, piece.pos,
                     buffers[g].size());
        const std::string path = kTensorGroups[g] + tensor_group_path(p.name);
        w.write_f32(piece_dataset(path, count[piece.param]++), p.shape, piece.box,
                    buffers[g].data() + piece.pos);
      }
    }
    w.finish();
  }
  RankFileResult result;
  h5::Id f = h5::open_file(rank_path);
  result.content_crc32c =
      rank_file_checksum(f, rank_path, meta.run_id, meta.state.step, part.rank);
  h5::close_file(f, rank_path);
  result.bytes = static_cast<int64_t>(fs::file_size(rank_path));
  return result;
}

SaveResult commit_checkpoint_unchecked(const std::string& checkpoints_dir,
                                       const CheckpointMeta& meta,
                                       const std::vector<RankFileResult>& rank_files, int keep) {
  SAMBAY_CHECK(keep >= 1, "keep_checkpoints {} must be at least 1", keep);
  SAMBAY_CHECK(static_cast<int64_t>(rank_files.size()) == meta.placement.world_size(),
               "{} rank files for a layout of {} ranks", rank_files.size(),
               meta.placement.world_size());
  const std::string name = step_dir_name(meta.state.step);
  const fs::path root(checkpoints_dir), tmp = root / (name + ".tmp"), final_dir = root / name;
  std::vector<std::string> files = {kIndexName};
  std::map<std::string, uint32_t> content;
  for (size_t r = 0; r < rank_files.size(); ++r) {
    files.push_back(rank_file_name(int64_t(r)));
    content[files.back()] = rank_files[r].content_crc32c;
  }
  write_manifest(tmp.string(), meta.state.step, meta.run_id, files, {kIndexName}, content);
  fsync_path(tmp.string());

  SaveResult result;
  for (const auto& e : fs::directory_iterator(tmp))
    if (e.is_regular_file()) result.bytes += static_cast<int64_t>(e.file_size());
  // A directory of the same step can only be a damaged or abandoned one (resuming fell back
  // past it): the new one replaces it.
  fs::remove_all(final_dir);
  fs::rename(tmp, final_dir);
  fsync_path(root.string());
  write_latest(root.string(), meta.state.step);
  result.dir = final_dir.string();
  result.removed = prune_checkpoints(root.string(), meta.state.step, keep);
  return result;
}

// Runs one stage of a save; a failure (a full disk, a failed write) removes the unfinished
// directory, freeing what it took; complete checkpoints are not touched. (A file HDF5 failed
// to close stays open in the library: HDF5 1.10 cannot release it, see io/hdf5_util.h.)
template <typename Fn>
auto save_stage(const std::string& checkpoints_dir, int64_t step, Fn fn) {
  try {
    return with_fs_errors(checkpoints_dir, fn);
  } catch (...) {
    abandon_checkpoint(checkpoints_dir, step);
    throw;
  }
}

}  // namespace

std::string begin_checkpoint(const std::string& checkpoints_dir, int64_t step,
                             double tensor_bytes) {
  return save_stage(checkpoints_dir, step, [&] {
    return begin_checkpoint_unchecked(checkpoints_dir, step, tensor_bytes);
  });
}

RankFileResult write_rank_file(const std::string& tmp_dir, const CheckpointMeta& meta,
                               const RankPart& part) {
  return with_fs_errors(tmp_dir, [&] { return write_rank_file_unchecked(tmp_dir, meta, part); });
}

void write_checkpoint_index(const std::string& tmp_dir, const CheckpointMeta& meta,
                            const std::vector<std::vector<StoredPiece>>& pieces_by_rank) {
  SAMBAY_CHECK(static_cast<int64_t>(pieces_by_rank.size()) == meta.placement.world_size(),
               "pieces of {} ranks for a layout of {}", pieces_by_rank.size(),
               meta.placement.world_size());
  with_fs_errors(tmp_dir, [&] {
    write_index((fs::path(tmp_dir) / kIndexName).string(), meta,
                global_tensors(build_param_layout(meta.model), pieces_by_rank));
  });
}

SaveResult commit_checkpoint(const std::string& checkpoints_dir, const CheckpointMeta& meta,
                             const std::vector<RankFileResult>& rank_files, int keep) {
  return save_stage(checkpoints_dir, meta.state.step, [&] {
    return commit_checkpoint_unchecked(checkpoints_dir, meta, rank_files, keep);
  });
}

void abandon_checkpoint(const std::string& checkpoints_dir, int64_t step) {
  std::error_code ec;
  fs::remove_all(fs::path(checkpoints_dir) / (step_dir_name(step) + ".tmp"), ec);
}

SaveResult save_checkpoint(const std::string& checkpoints_dir, const CheckpointView& v,
                           int keep) {
  const ParamLayout layout = build_param_layout(v.model);
  const size_t n = static_cast<size_t>(layout.total);
  SAMBAY_CHECK(v.params.size() == n && v.adam_m.size() == n && v.adam_v.size() == n,
               "checkpoint buffers hold {}, {}, {} values; the layout has {}", v.params.size(),
               v.adam_m.size(), v.adam_v.size(), n);
  SAMBAY_CHECK(keep >= 1, "keep_checkpoints {} must be at least 1", keep);
  const CheckpointMeta meta{v.model, v.train_config_text, v.state,
                            v.run_id.empty() ? new_run_id() : v.run_id, ParallelPlacement{}};
  // One process owns everything: one piece per tensor.
  const std::vector<std::vector<StoredPiece>> pieces = {
      owned_pieces(layout, layout, whole_buffer_ownership(layout.total))};
  const std::string tmp = begin_checkpoint(checkpoints_dir, v.state.step, 3.0 * 4.0 * double(n));
  return save_stage(checkpoints_dir, v.state.step, [&] {
    const RankFileResult file =
        write_rank_file_unchecked(tmp, meta, {0, &pieces[0], v.params, v.adam_m, v.adam_v});
    write_index((fs::path(tmp) / kIndexName).string(), meta, global_tensors(layout, pieces));
    return commit_checkpoint_unchecked(checkpoints_dir, meta, {file}, keep);
  });
}

namespace {

CheckpointInfo read_checkpoint_info_unchecked(const std::string& dir) {
  const Manifest manifest = verify_manifest(dir);
  auto listed = [&](const std::string& name) {
    for (const ManifestEntry& e : manifest.files)
      if (e.name == name) return true;
    return false;
  };
  const std::string index = (fs::path(dir) / kIndexName).string();
  if (!listed(kIndexName)) fail("{}: not listed in manifest.txt", index);

  CheckpointInfo info;
  info.dir = dir;
  h5::Id f = h5::open_file(index);
  const std::string format = h5::read_attr_string(f, "format", index);
  if (format != kIndexFormat) fail("{}: format '{}', expected '{}'", index, format, kIndexFormat);
  const int64_t version = h5::read_attr_int(f, "format_version", index);
  if (version < kOldestReadableCheckpointVersion || version > kCheckpointFormatVersion)
    fail("{}: format version {}; this sambay reads versions {} to {}", index, version,
         kOldestReadableCheckpointVersion, kCheckpointFormatVersion);
  info.format_version = version;
  // Version 2 binds every file to the run: the index, the manifest and each rank file name it.
  const bool bound = version >= 2;
  if (bound != (manifest.version >= 2))
    fail("{}: format version {} with a version {} manifest.txt: the files come from different "
         "checkpoints",
         index, version, manifest.version);
  if (bound) {
    info.run_id = h5::read_attr_string(f, "run_id", index);
    if (info.run_id != manifest.run_id)
      fail("{}: written by run {}, but manifest.txt is of run {}: the files come from different "
           "checkpoints",
           index, info.run_id, manifest.run_id);
  }
  info.step = h5::read_attr_int(f, "step", index);
  if (info.step != manifest.step)
    fail("{}: step {} but manifest.txt says {}", index, info.step, manifest.step);
  info.sambay_version = h5::read_attr_string(f, "sambay_version", index);
  info.git_commit = h5::read_attr_string(f, "git_commit", index);
  info.created = h5::read_attr_string(f, "created", index);
  info.model_config_text = h5::read_text(f, "config/model", index);
  info.train_config_text = h5::read_text(f, "config/train", index);
  info.model = parse_model_config_text(info.model_config_text, index + ":config/model");
  {
    h5::Id g(h5::check(H5Gopen2(f, "train_state", H5P_DEFAULT), index, "open train_state"),
             H5Gclose);
    info.state = read_train_state(g, index + ":train_state");
    h5::Id p(h5::check(H5Gopen2(f, "parallel", H5P_DEFAULT), index, "open parallel"), H5Gclose);
    const std::string where = index + ":parallel";
    info.parallel.dp = h5::read_attr_int(p, "dp", where);
    info.parallel.tp = h5::read_attr_int(p, "tp", where);
    info.parallel.cp = h5::read_attr_int(p, "cp", where);
    if (h5::read_attr_int(p, "world_size", where) != info.parallel.world_size() ||
        info.parallel.dp < 1 || info.parallel.tp < 1 || info.parallel.cp < 1)
      fail("{}: inconsistent parallel layout", where);
  }
  if (info.state.step != info.step)
    fail("{}: train_state step {} differs from the checkpoint's step {}", index, info.state.step,
         info.step);
  info.tensors = read_virtual_tensors(f, index);
  h5::close_file(f, index);
  if (version < 3)  // one piece per tensor and rank file, at the tensor's own path
    for (const GlobalTensor& t : info.tensors)
      for (const ShardPiece& p : t.pieces)
        if (!p.dataset.empty() && p.dataset != t.path)
          fail("{}: tensor {} maps dataset '{}' of {}, which format version {} does not have",
               index, t.path, p.dataset, p.file, version);

  // Every rank file: listed, written for this step and layout, and (version 2) by this run,
  // with the contents the manifest recorded.
  for (int64_t r = 0; r < info.parallel.world_size(); ++r) {
    const std::string name = rank_file_name(r);
    const std::string path = (fs::path(dir) / name).string();
    const ManifestEntry* entry = nullptr;
    for (const ManifestEntry& e : manifest.files)
      if (e.name == name) entry = &e;
    if (!entry) fail("{}: not listed in manifest.txt", path);
    h5::Id rf = h5::open_file(path);
    if (h5::read_attr_string(rf, "format", path) != kRankFormat)
      fail("{}: not a sambay checkpoint rank file", path);
    const int64_t step = h5::read_attr_int(rf, "step", path);
    const int64_t rank = h5::read_attr_int(rf, "rank", path);
    const int64_t world = h5::read_attr_int(rf, "world_size", path);
    if (bound) {
      const std::string run = h5::read_attr_string(rf, "run_id", path);
      if (run != info.run_id)
        fail("{}: written by run {} at step {}, but this checkpoint is run {}: a file from "
             "another run",
             path, run, step, info.run_id);
    }
    if (step != info.step || rank != r || world != info.parallel.world_size())
      fail("{}: written as rank {} of {} at step {}, expected rank {} of {} at step {}", path,
           rank, world, step, r, info.parallel.world_size(), info.step);
    if (bound) {
      if (!entry->content_crc32c) fail("{}: manifest.txt has no checksum for {}", dir, name);
      const uint32_t actual = rank_file_checksum(rf, path, info.run_id, info.step, r);
      if (actual != *entry->content_crc32c)
        fail("{}: its contents (checksum {:08x}) are not the ones manifest.txt recorded ({:08x}): "
             "the file was replaced by one of another save, or is damaged",
             path, actual, *entry->content_crc32c);
    }
    h5::close_file(rf, path);
  }
  for (const GlobalTensor& t : info.tensors)
    for (const ShardPiece& p : t.pieces)
      if (!listed(p.file)) fail("{}: tensor {} has a piece in {}, which manifest.txt does not list",
                                index, t.path, p.file);
  return info;
}

}  // namespace

CheckpointInfo read_checkpoint_info(const std::string& dir) {
  return with_fs_errors(dir, [&] { return read_checkpoint_info_unchecked(dir); });
}

std::vector<std::string> model_config_differences(const ModelConfig& stored,
                                                  const ModelConfig& wanted) {
  std::vector<std::string> out;
  const auto a = model_config_fields(stored), b = model_config_fields(wanted);
  for (size_t i = 0; i < a.size() && i < b.size(); ++i)
    if (a[i].first != "name" && a[i].second != b[i].second)
      out.push_back(fmt::format("model.{}: {} in the checkpoint, {} here", a[i].first,
                                a[i].second, b[i].second));
  return out;
}

namespace {

// The step directory's description, refused (CheckpointMismatch, every differing field named)
// when it was written for a model other than `expected`.
CheckpointInfo read_matching_info(const std::string& dir,
                                  const std::optional<ModelConfig>& expected) {
  CheckpointInfo info = read_checkpoint_info(dir);
  if (expected) {
    const std::vector<std::string> diffs = model_config_differences(info.model, *expected);
    if (!diffs.empty()) {
      std::string list;
      for (const std::string& d : diffs) list += "\n  " + d;
      throw CheckpointMismatch(fmt::format(
          "{}: written for a different model ({} field{} differ):{}", info.dir, diffs.size(),
          diffs.size() == 1 ? "" : "s", list));
    }
  }
  return info;
}

void load_parts(const CheckpointInfo& info, const RankLoadTargets& targets) {
  const std::string& dir = info.dir;
  const ParamLayout layout = build_param_layout(info.model);
  const ParamLayout shard = targets.tp > 1
                                ? build_param_layout(tensor_parallel_config(info.model, targets.tp))
                                : layout;
  for (const std::span<float>& b : {targets.adam_m, targets.adam_v})
    SAMBAY_CHECK(static_cast<int64_t>(b.size()) == targets.moments.buffer_size,
                 "{}: a moment buffer of {} values for {} owned", dir, b.size(),
                 targets.moments.buffer_size);
  for (const OwnedRange& r : targets.moments.ranges)
    SAMBAY_CHECK(r.begin >= 0 && r.begin <= r.end && r.end <= shard.total && r.pos >= 0 &&
                     r.pos + (r.end - r.begin) <= targets.moments.buffer_size,
                 "{}: owned range [{}, {}) at {} outside a shard of {} or a buffer of {}", dir,
                 r.begin, r.end, r.pos, shard.total, targets.moments.buffer_size);
  std::map<std::string, const GlobalTensor*> by_path;
  for (const GlobalTensor& t : info.tensors) by_path[t.path] = &t;
  const size_t expected_tensors = std::size(kTensorGroups) * layout.params.size();
  if (by_path.size() != expected_tensors)
    fail("{}: {} tensors, the model's layout has {}", dir, by_path.size(), expected_tensors);
  auto tensor = [&](size_t g, const ParamSpec& p) -> const GlobalTensor& {
    const std::string path = kTensorGroups[g] + tensor_group_path(p.name);
    auto it = by_path.find(path);
    if (it == by_path.end()) fail("{}: tensor {} is missing", dir, path);
    const GlobalTensor& t = *it->second;
    if (t.shape != p.shape)
      fail("{}: tensor {} has shape {}, the model needs {}", dir, path, fmt::join(t.shape, "x"),
           fmt::join(p.shape, "x"));
    if (t.dtype != StoredDType::f32)
      fail("{}: tensor {} is {}, master weights and moments are f32", dir, path,
           stored_dtype_name(t.dtype));
    return t;
  };
  // The moment values this rank keeps, as boxes of each tensor (in flat order).
  RankOwnership owned = targets.moments;
  owned.tp = targets.tp, owned.tp_rank = targets.tp_rank;
  const std::vector<StoredPiece> moment_pieces =
      owned_pieces(layout, shard, owned, /*replicated_too=*/true);
  ShardReader reader(dir);
  size_t next_moment = 0;
  for (size_t i = 0; i < layout.params.size(); ++i) {
    const ParamSpec& p = layout.params[i];
    float* params = targets.params_at(int(i));
    std::vector<ShardReader::Want> wants;
    for (const StoredPiece& piece : shard_tensor_pieces(layout, shard, int(i), targets.tp,
                                                        targets.tp_rank))
      wants.push_back({piece.box, params + (piece.pos - shard.params[i].offset)});
    reader.read_boxes(tensor(0, p), wants);
    if (targets.params_loaded) targets.params_loaded(int(i));
    std::vector<ShardReader::Want> m_wants, v_wants;
    for (; next_moment < moment_pieces.size() && moment_pieces[next_moment].param == int(i);
         ++next_moment) {
      const StoredPiece& piece = moment_pieces[next_moment];
      m_wants.push_back({piece.box, targets.adam_m.data() + piece.pos});
      v_wants.push_back({piece.box, targets.adam_v.data() + piece.pos});
    }
    if (!m_wants.empty()) {
      reader.read_boxes(tensor(1, p), m_wants);
      reader.read_boxes(tensor(2, p), v_wants);
    }
  }
}

}  // namespace

CheckpointInfo load_checkpoint_part(const std::string& dir,
                                    const std::optional<ModelConfig>& expected,
                                    const RankLoadTargets& targets) {
  CheckpointInfo info = read_matching_info(dir, expected);
  load_parts(info, targets);
  return info;
}

CheckpointInfo load_checkpoint_into(const std::string& dir,
                                    const std::optional<ModelConfig>& expected,
                                    const CheckpointTargets& out) {
  CheckpointInfo info = read_matching_info(dir, expected);
  const ParamLayout layout = build_param_layout(info.model);
  for (const std::span<float>& b : {out.params, out.adam_m, out.adam_v})
    SAMBAY_CHECK(static_cast<int64_t>(b.size()) == layout.total,
                 "{}: a buffer of {} values for a layout of {}", dir, b.size(), layout.total);
  RankLoadTargets t;
  t.params_at = [&](int param) { return out.params.data() + layout.params[param].offset; };
  t.moments = whole_buffer_ownership(layout.total);
  t.adam_m = out.adam_m, t.adam_v = out.adam_v;
  load_parts(info, t);
  return info;
}

LoadedCheckpoint load_checkpoint(const std::string& dir,
                                 const std::optional<ModelConfig>& expected) {
  // The layout comes from the checkpoint (or the expected config, which must match it).
  const ModelConfig model = expected ? *expected : read_checkpoint_info(dir).model;
  const int64_t n = build_param_layout(model).total;
  LoadedCheckpoint out;
  out.params.resize(n);
  out.adam_m.resize(n);
  out.adam_v.resize(n);
  out.info = load_checkpoint_into(dir, expected, {out.params, out.adam_m, out.adam_v});
  return out;
}

std::vector<std::vector<ShardReader::PieceCheck>> verify_checkpoint_data(
    const CheckpointInfo& info) {
  ShardReader reader(info.dir);
  std::vector<std::vector<ShardReader::PieceCheck>> out;
  for (const GlobalTensor& t : info.tensors) {
    out.emplace_back();
    for (const ShardPiece& p : t.pieces) out.back().push_back(reader.verify_piece(t, p));
  }
  return out;
}

std::optional<CheckpointInfo> load_newest_checkpoint_with(
    const std::string& checkpoints_dir,
    const std::function<CheckpointInfo(const std::string& step_dir)>& load,
    const std::function<void(const std::string&)>& report,
    const std::function<bool(bool loaded_here)>& all_loaded) {
  const std::vector<StepDir> dirs = list_checkpoints(checkpoints_dir);
  if (dirs.empty()) return std::nullopt;
  std::string damaged;
  for (const StepDir& d : dirs) {
    std::optional<CheckpointInfo> info;
    std::string why;
    try {
      info = load(d.path);
    } catch (const CheckpointMismatch&) {
      throw;
    } catch (const Error& e) {
      why = e.what();
      report(fmt::format("checkpoint {} is damaged and is skipped: {}", d.path, why));
    }
    const bool everywhere = all_loaded ? all_loaded(info.has_value()) : info.has_value();
    if (everywhere) return info;
    if (why.empty()) {
      why = "another rank found it damaged (its message names the file)";
      report(fmt::format("checkpoint {} is damaged and is skipped: {}", d.path, why));
    }
    damaged += fmt::format("\n  {}: {}", d.path, why);
  }
  fail("{}: every checkpoint is damaged:{}", checkpoints_dir, damaged);
}

std::optional<CheckpointInfo> load_newest_checkpoint(
    const std::string& checkpoints_dir, const ModelConfig& expected,
    const std::function<void(const std::string&)>& report, const CheckpointTargets& out) {
  return load_newest_checkpoint_with(
      checkpoints_dir, [&](const std::string& dir) { return load_checkpoint_into(dir, expected, out); },
      report);
}

}  // namespace sambay
