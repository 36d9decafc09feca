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

// The global tensors of a single-rank checkpoint: every tensor whole in rank_00000.h5. A
// parallel layout would list each rank's box here instead.
std::vector<GlobalTensor> single_rank_tensors(const ParamLayout& layout) {
  std::vector<GlobalTensor> out;
  for (const char* group : kTensorGroups)
    for (const ParamSpec& p : layout.params) {
      GlobalTensor t{group + tensor_group_path(p.name), StoredDType::f32, p.shape, {}};
      t.pieces.push_back({rank_file_name(0), {std::vector<int64_t>(p.shape.size(), 0), p.shape}});
      out.push_back(std::move(t));
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

void write_index(const std::string& path, const CheckpointView& v, const std::string& run_id,
                 const std::vector<GlobalTensor>& tensors, const ParallelPlacement& placement) {
  h5::Id f = h5::create_file(path);
  h5::write_attr(f, "format", std::string(kIndexFormat), path);
  h5::write_attr(f, "format_version", kCheckpointFormatVersion, path);
  h5::write_attr(f, "run_id", run_id, path);
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
    write_placement(p, placement, path + ":parallel");
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

SaveResult save_checkpoint_unchecked(const std::string& checkpoints_dir, const CheckpointView& v,
                                     int keep) {
  const ParamLayout layout = build_param_layout(v.model);
  const size_t n = static_cast<size_t>(layout.total);
  SAMBAY_CHECK(v.params.size() == n && v.adam_m.size() == n && v.adam_v.size() == n,
               "checkpoint buffers hold {}, {}, {} values; the layout has {}", v.params.size(),
               v.adam_m.size(), v.adam_v.size(), n);
  SAMBAY_CHECK(keep >= 1, "keep_checkpoints {} must be at least 1", keep);
  const std::string name = step_dir_name(v.state.step);
  const fs::path root(checkpoints_dir), tmp = root / (name + ".tmp"), final_dir = root / name;
  const ParallelPlacement placement;  // single process
  const std::string run_id = v.run_id.empty() ? new_run_id() : v.run_id;
  fs::create_directories(root);
  // The tensors alone need this much: a file system with less free space cannot take the
  // checkpoint, and is reported before a byte is written.
  const double tensor_bytes = 3.0 * 4.0 * static_cast<double>(n);
  if (struct statvfs fsinfo {}; ::statvfs(root.c_str(), &fsinfo) == 0) {
    const double free_bytes = double(fsinfo.f_bavail) * double(fsinfo.f_frsize);
    if (free_bytes < tensor_bytes)
      fail("{}: the checkpoint of step {} needs at least {:.1f} MB and the file system has "
           "{:.1f} MB free: No space left on device",
           checkpoints_dir, v.state.step, tensor_bytes / 1e6, free_bytes / 1e6);
  }
  fs::remove_all(tmp);
  fs::create_directory(tmp);

  const std::vector<GlobalTensor> tensors = single_rank_tensors(layout);
  const std::string rank_name = rank_file_name(0);
  const std::string rank_path = (tmp / rank_name).string();
  {
    ShardFileWriter w(rank_path);
    h5::write_attr(w.file(), "format", std::string(kRankFormat), rank_path);
    h5::write_attr(w.file(), "format_version", kCheckpointFormatVersion, rank_path);
    h5::write_attr(w.file(), "run_id", run_id, rank_path);
    h5::write_attr(w.file(), "step", v.state.step, rank_path);
    h5::write_attr(w.file(), "rank", int64_t{0}, rank_path);
    write_placement(w.file(), placement, rank_path);
    const std::span<const float> buffers[] = {v.params, v.adam_m, v.adam_v};
    size_t i = 0;
    for (const std::span<const float>& buffer : buffers)
      for (const ParamSpec& p : layout.params) {
        const GlobalTensor& t = tensors[i++];
        w.write_f32(t.path, t.shape, t.pieces[0].box, buffer.data() + p.offset);
      }
    w.finish();
  }
  std::map<std::string, uint32_t> content;
  {
    h5::Id f = h5::open_file(rank_path);
    content[rank_name] = rank_file_checksum(f, rank_path, run_id, v.state.step, 0);
    h5::close_file(f, rank_path);
  }
  write_index((tmp / kIndexName).string(), v, run_id, tensors, placement);
  write_manifest(tmp.string(), v.state.step, run_id, {kIndexName, rank_name}, {kIndexName},
                 content);
  fsync_path(tmp.string());

  SaveResult result;
  for (const auto& e : fs::directory_iterator(tmp))
    if (e.is_regular_file()) result.bytes += static_cast<int64_t>(e.file_size());
  // A directory of the same step can only be a damaged or abandoned one (resuming fell back
  // past it): the new one replaces it.
  fs::remove_all(final_dir);
  fs::rename(tmp, final_dir);
  fsync_path(root.string());
  write_latest(root.string(), v.state.step);
  result.dir = final_dir.string();
  result.removed = prune_checkpoints(root.string(), v.state.step, keep);
  return result;
}

}  // namespace

SaveResult save_checkpoint(const std::string& checkpoints_dir, const CheckpointView& v,
                           int keep) {
  try {
    return with_fs_errors(checkpoints_dir,
                          [&] { return save_checkpoint_unchecked(checkpoints_dir, v, keep); });
  } catch (...) {
    // A full disk or a failed write: the unfinished directory goes (freeing what it took);
    // complete checkpoints were not touched. (A file HDF5 failed to close stays open in the
    // library: HDF5 1.10 cannot release it, see io/hdf5_util.h.)
    std::error_code ec;
    fs::remove_all(fs::path(checkpoints_dir) / (step_dir_name(v.state.step) + ".tmp"), ec);
    throw;
  }
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

CheckpointInfo load_checkpoint_into(const std::string& dir,
                                    const std::optional<ModelConfig>& expected,
                                    const CheckpointTargets& out) {
  CheckpointInfo info = read_checkpoint_info(dir);
  if (expected) {
    const std::vector<std::string> diffs = model_config_differences(info.model, *expected);
    if (!diffs.empty()) {
      std::string list;
      for (const std::string& d : diffs) list += "\n  " + d;
      throw CheckpointMismatch(fmt::format(
          "{}: written for a different model ({} field{} differ):{}", dir, diffs.size(),
          diffs.size() == 1 ? "" : "s", list));
    }
  }
  const ParamLayout layout = build_param_layout(info.model);
  const std::span<float> buffers[] = {out.params, out.adam_m, out.adam_v};
  for (const std::span<float>& b : buffers)
    SAMBAY_CHECK(static_cast<int64_t>(b.size()) == layout.total,
                 "{}: a buffer of {} values for a layout of {}", dir, b.size(), layout.total);
  std::map<std::string, const GlobalTensor*> by_path;
  for (const GlobalTensor& t : info.tensors) by_path[t.path] = &t;
  const size_t expected_tensors = std::size(kTensorGroups) * layout.params.size();
  if (by_path.size() != expected_tensors)
    fail("{}: {} tensors, the model's layout has {}", dir, by_path.size(), expected_tensors);

  ShardReader reader(dir);
  for (size_t g = 0; g < std::size(kTensorGroups); ++g)
    for (const ParamSpec& p : layout.params) {
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
      reader.read_box(t, {std::vector<int64_t>(p.shape.size(), 0), p.shape},
                      buffers[g].data() + p.offset);
    }
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

std::optional<CheckpointInfo> load_newest_checkpoint(
    const std::string& checkpoints_dir, const ModelConfig& expected,
    const std::function<void(const std::string&)>& report, const CheckpointTargets& out) {
  const std::vector<StepDir> dirs = list_checkpoints(checkpoints_dir);
  if (dirs.empty()) return std::nullopt;
  std::string damaged;
  for (const StepDir& d : dirs) {
    try {
      return load_checkpoint_into(d.path, expected, out);
    } catch (const CheckpointMismatch&) {
      throw;
    } catch (const Error& e) {
      report(fmt::format("checkpoint {} is damaged and is skipped: {}", d.path, e.what()));
      damaged += fmt::format("\n  {}: {}", d.path, e.what());
    }
  }
  fail("{}: every checkpoint is damaged:{}", checkpoints_dir, damaged);
}

}  // namespace sambay
