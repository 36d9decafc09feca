// Checkpoints: exact round trip, the directory protocol (keep K, latest, leftovers), refusal of
// a different model config, fallback past a damaged newest checkpoint, every truncation and a
// sample of bit flips of every file (an error naming the file, or a load identical to the
// undamaged one), and h5py reading what sambay wrote.
#include "core/param_layout.h"
#include "io/checkpoint.h"
#include "io/checkpoint_dir.h"
#include "io/hdf5_util.h"
#include "launch/resume.h"
#include "sambay_version.h"
#include "tests/io_test_util.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <filesystem>
#include <random>

namespace sambay {
namespace {

namespace fs = std::filesystem;
using testing::ScratchDir;
using testing::expect_error;
using testing::read_bytes;
using testing::write_bytes;

ModelConfig config_of(const std::string& preset) {
  const std::string untied = "-untied";
  if (!preset.ends_with(untied)) return model_preset(preset);
  ModelConfig c = model_preset(preset.substr(0, preset.size() - untied.size()));
  c.tied_embedding = false;
  return c;
}

// A model's state as a trainer holds it, with distinct values in every buffer.
struct State {
  ModelConfig config;
  std::vector<float> params, m, v;
  TrainState train;
  std::string train_text = "lr = 0.001\nseed = 42\n";

  // preset, or "<preset>-untied": the preset with its own readout matrix.
  explicit State(const std::string& preset, int64_t step = 7) : config(config_of(preset)) {
    const ParamLayout layout = build_param_layout(config);
    params.resize(layout.total);
    init_params(layout, params.data(), 11);
    m.resize(layout.total);
    v.resize(layout.total);
    std::mt19937 rng(5);
    std::normal_distribution<float> normal(0.0f, 1e-3f);
    for (size_t i = 0; i < m.size(); ++i) {
      m[i] = normal(rng);
      v[i] = m[i] * m[i] + 1e-9f * i;
    }
    train.step = step;
    train.consumed_samples = step * 8;
    train.consumed_tokens = step * 8 * 32;
    train.data_sources = "data/a:0.7;data/b:0.3";
    train.data_seed = 0xFEDCBA9876543210ull;  // above 2^63: stored unsigned
    train.seq_len = 32;
    train.global_batch = 8;
    train.valid_fraction = 0.01;
    train.schedule = "wsd";
    train.peak_lr = 1e-3;
    train.last_lr = 3.3333333333333335e-4;
    train.min_lr_ratio = 0.1;
    train.decay_fraction = 0.2;
    train.warmup = 3;
    train.total_steps = 100;
    train.init_seed = 42;
    train.threads = 2;
  }

  SaveResult save(const std::string& dir, int64_t step, int keep = 3) {
    train.step = step;
    return save_checkpoint(dir, {config, train_text, train, params, m, v}, keep);
  }
};

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

void expect_same_state(const TrainState& a, const TrainState& b) {
  EXPECT_EQ(a.step, b.step);
  EXPECT_EQ(a.consumed_samples, b.consumed_samples);
  EXPECT_EQ(a.consumed_tokens, b.consumed_tokens);
  EXPECT_EQ(a.data_sources, b.data_sources);
  EXPECT_EQ(a.data_seed, b.data_seed);
  EXPECT_EQ(a.seq_len, b.seq_len);
  EXPECT_EQ(a.global_batch, b.global_batch);
  EXPECT_EQ(a.valid_fraction, b.valid_fraction);
  EXPECT_EQ(a.schedule, b.schedule);
  EXPECT_EQ(a.peak_lr, b.peak_lr);
  EXPECT_EQ(a.last_lr, b.last_lr);
  EXPECT_EQ(a.min_lr_ratio, b.min_lr_ratio);
  EXPECT_EQ(a.decay_fraction, b.decay_fraction);
  EXPECT_EQ(a.warmup, b.warmup);
  EXPECT_EQ(a.total_steps, b.total_steps);
  EXPECT_EQ(a.init_seed, b.init_seed);
  EXPECT_EQ(a.threads, b.threads);
}

TEST(Checkpoint, TensorGroupPathsFollowTheModuleStructure) {
  EXPECT_EQ(tensor_group_path("layers.7.mixer.in_proj.weight"), "layers.7/mixer/in_proj/weight");
  EXPECT_EQ(tensor_group_path("layers.12.mixer.A_log"), "layers.12/mixer/A_log");
  EXPECT_EQ(tensor_group_path("embedding.weight"), "embedding/weight");
  EXPECT_EQ(tensor_group_path("final_norm.bias"), "final_norm/bias");
}

TEST(Checkpoint, RoundTripIsBitExact) {
  ScratchDir dir;
  State s("tiny-sambay-da");
  const SaveResult r = s.save(dir.file("ckpt"), 7);
  EXPECT_EQ(r.dir, dir.file("ckpt/step_00000007"));
  EXPECT_GT(r.bytes, 0);
  const std::vector<uint8_t> latest = read_bytes(dir.file("ckpt/latest"));
  EXPECT_EQ(std::string(latest.begin(), latest.end()), "step_00000007\n");
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(r.dir)) files.push_back(e.path().filename().string());
  std::sort(files.begin(), files.end());
  EXPECT_EQ(files, (std::vector<std::string>{"index.h5", "manifest.txt", "rank_00000.h5"}));

  const LoadedCheckpoint c = load_checkpoint(r.dir, s.config);
  EXPECT_TRUE(same_bits(c.params, s.params));
  EXPECT_TRUE(same_bits(c.adam_m, s.m));
  EXPECT_TRUE(same_bits(c.adam_v, s.v));
  expect_same_state(c.info.state, s.train);
  EXPECT_EQ(c.info.step, 7);
  EXPECT_EQ(c.info.train_config_text, s.train_text);
  EXPECT_EQ(c.info.model_config_text, model_config_to_text(s.config));
  EXPECT_TRUE(model_config_differences(c.info.model, s.config).empty());
  EXPECT_EQ(c.info.model.name, s.config.name);
  EXPECT_EQ(c.info.sambay_version, SAMBAY_VERSION);
  EXPECT_EQ(c.info.git_commit, SAMBAY_GIT_COMMIT);
  EXPECT_EQ(c.info.parallel.world_size(), 1);
  EXPECT_EQ(c.info.tensors.size(), 3 * build_param_layout(s.config).params.size());

  // Without an expected config, the checkpoint's own is used.
  const LoadedCheckpoint own = load_checkpoint(r.dir, std::nullopt);
  EXPECT_TRUE(same_bits(own.adam_v, s.v));
}

// An untied head is one more tensor (lm_head/weight) in every group.
TEST(Checkpoint, UntiedHeadRoundTripsAndATiedCheckpointIsNotItsModel) {
  ScratchDir dir;
  State tied("tiny-sambay-da");
  State s("tiny-sambay-da-untied");
  const SaveResult r = s.save(dir.file("ckpt"), 7);
  const LoadedCheckpoint c = load_checkpoint(r.dir, s.config);
  EXPECT_TRUE(same_bits(c.params, s.params));
  EXPECT_TRUE(same_bits(c.adam_m, s.m));
  EXPECT_TRUE(same_bits(c.adam_v, s.v));
  EXPECT_FALSE(c.info.model.tied_embedding);
  bool head = false;
  for (const GlobalTensor& t : c.info.tensors) head |= t.path.find("lm_head/weight") != std::string::npos;
  EXPECT_TRUE(head);
  // A tied model's checkpoint is refused for the untied model, naming the field.
  const std::string tied_dir = tied.save(dir.file("tied"), 3).dir;
  try {
    load_checkpoint(tied_dir, s.config);
    FAIL() << "expected CheckpointMismatch";
  } catch (const CheckpointMismatch& e) {
    EXPECT_NE(std::string(e.what()).find("model.tied_embedding: true in the checkpoint, false here"),
              std::string::npos)
        << e.what();
  }
}

// Checkpoints written before tied_embedding, init, init_multiplier, mup_base_depth and
// mup_base_head_dim existed lack those lines: they read as the model they were (tied, sambay's
// init, no depth or head-dim rule), and a resume reports no change for them.
TEST(Checkpoint, AConfigWithoutTheNewerFieldsReadsAsTheModelItWas) {
  for (const char* preset : {"tiny-sambay-da", "phi4-mini-flash", "sambay-1b"}) {
    ModelConfig c = model_preset(preset);
    if (std::string(preset) == "sambay-1b") c.mup_base_width = 1024;  // an old μP++ run
    const std::string text = model_config_to_text(c);
    std::string old_text;
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);) {
      bool newer = false;
      for (const char* field : {"tied_embedding", "init ", "init_multiplier", "mup_base_depth",
                                "mup_base_head_dim"})
        newer |= line.rfind(std::string("model.") + field, 0) == 0;
      if (!newer) old_text += line + "\n";
    }
    ASSERT_EQ(std::count(old_text.begin(), old_text.end(), '\n') + 5,
              std::count(text.begin(), text.end(), '\n'));
    const ModelConfig read = parse_model_config_text(old_text, "old checkpoint");
    EXPECT_TRUE(model_config_differences(read, c).empty()) << preset;
    EXPECT_EQ(build_param_layout(read).total, build_param_layout(c).total) << preset;

    TrainConfig cfg;
    cfg.model_preset = preset;
    cfg.model = c;
    cfg.data = {"data/x"};
    CheckpointInfo info;
    std::string old_train;
    std::istringstream train_lines(train_config_to_text(cfg));
    for (std::string line; std::getline(train_lines, line);)
      if (old_text.find(line) != std::string::npos || line.rfind("model.", 0) != 0)
        old_train += line + "\n";
    info.train_config_text = old_train;
    EXPECT_TRUE(resume_differences(info, cfg, 0).empty())
        << preset << ": " << fmt::format("{}", fmt::join(resume_differences(info, cfg, 0), "; "));
  }
}

TEST(Checkpoint, ADifferentModelConfigIsRefusedNamingEveryField) {
  ScratchDir dir;
  State s("tiny-sambay-da");
  const std::string step_dir = s.save(dir.file("ckpt"), 3).dir;
  ModelConfig other = s.config;
  other.d_ff = 12;
  other.window = 5;
  other.differential = false;
  try {
    load_checkpoint(step_dir, other);
    FAIL() << "expected CheckpointMismatch";
  } catch (const CheckpointMismatch& e) {
    const std::string msg = e.what();
    for (const char* part : {"model.d_ff: 10 in the checkpoint, 12 here",
                             "model.window: 3 in the checkpoint, 5 here",
                             "model.differential: true in the checkpoint, false here",
                             "3 fields differ", step_dir.c_str()})
      EXPECT_NE(msg.find(part), std::string::npos) << msg << "\nmissing: " << part;
  }
  // The preset name is a label: a renamed but identical model loads.
  ModelConfig renamed = s.config;
  renamed.name = "my-model";
  EXPECT_TRUE(same_bits(load_checkpoint(step_dir, renamed).params, s.params));
  // A mismatch is not damage: no fallback to an older checkpoint hides it.
  s.save(dir.file("ckpt"), 4);
  std::vector<float> p(s.params.size()), m(p.size()), v(p.size());
  EXPECT_THROW(load_newest_checkpoint(dir.file("ckpt"), other, [](const std::string&) {}, {p, m, v}),
               CheckpointMismatch);
}

TEST(Checkpoint, KeepsTheNewestKAndPointsLatestAtTheNewest) {
  ScratchDir dir;
  State s("tiny-transformerpp");
  const std::string root = dir.file("ckpt");
  for (int64_t step = 1; step <= 5; ++step) s.save(root, step, 2);
  auto steps = [&] {
    std::vector<int64_t> out;
    for (const StepDir& d : list_checkpoints(root)) out.push_back(d.step);
    return out;
  };
  EXPECT_EQ(steps(), (std::vector<int64_t>{5, 4}));
  const std::vector<uint8_t> latest = read_bytes(root + "/latest");
  EXPECT_EQ(std::string(latest.begin(), latest.end()), "step_00000005\n");

  // A crashed write leaves a .tmp directory; a run resumed from an older checkpoint leaves
  // newer ones from the abandoned timeline. The next save removes both.
  fs::create_directories(root + "/step_00000009.tmp");
  fs::copy(root + "/step_00000005", root + "/step_00000008");
  EXPECT_EQ(steps(), (std::vector<int64_t>{8, 5, 4}));
  const SaveResult r = s.save(root, 6, 2);
  EXPECT_EQ(steps(), (std::vector<int64_t>{6, 5}));
  EXPECT_EQ(r.removed.size(), 3u);  // step 8 (newer), step 4 (beyond keep), the .tmp
  EXPECT_FALSE(fs::exists(root + "/step_00000009.tmp"));

  // keep = 1 keeps exactly the one just written; saving the same step again replaces it.
  s.save(root, 6, 1);
  EXPECT_EQ(steps(), (std::vector<int64_t>{6}));
  EXPECT_THROW(s.save(root, 7, 0), Error);
  EXPECT_EQ(steps(), (std::vector<int64_t>{6}));
}

// Offset of the first occurrence of `needle` in `hay`, or npos.
size_t find_bytes(const std::vector<uint8_t>& hay, const void* needle, size_t n) {
  auto it = std::search(hay.begin(), hay.end(), static_cast<const uint8_t*>(needle),
                        static_cast<const uint8_t*>(needle) + n);
  return it == hay.end() ? std::string::npos : static_cast<size_t>(it - hay.begin());
}

TEST(Checkpoint, ADamagedNewestCheckpointFallsBackToThePreviousOne) {
  ScratchDir dir;
  State s("tiny-sambay-da");
  const std::string root = dir.file("ckpt");
  s.save(root, 3);
  const std::vector<float> params_at_3 = s.params;
  s.params[0] += 1.0f;
  const std::string newest = s.save(root, 4).dir;
  fs::create_directories(root + "/step_00000005.tmp");  // an interrupted write: never a candidate

  // Flip one bit inside the stored values of optim/v (found by their bytes).
  const std::string rank = newest + "/rank_00000.h5";
  std::vector<uint8_t> bytes = read_bytes(rank);
  const size_t at = find_bytes(bytes, s.v.data() + 100, 64);
  ASSERT_NE(at, std::string::npos);
  bytes[at + 5] ^= 0x10;
  write_bytes(rank, bytes);

  std::vector<std::string> reports;
  std::vector<float> p(s.params.size()), m(p.size()), v(p.size());
  const auto c = load_newest_checkpoint(
      root, s.config, [&](const std::string& r) { reports.push_back(r); }, {p, m, v});
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->step, 3);
  EXPECT_TRUE(same_bits(p, params_at_3));
  EXPECT_TRUE(same_bits(v, s.v));
  ASSERT_EQ(reports.size(), 1u);
  for (const std::string& part : {newest, rank, std::string("crc32c"), std::string("optim/v/")})
    EXPECT_NE(reports[0].find(part), std::string::npos) << reports[0] << "\nmissing: " << part;

  // When every checkpoint is damaged, nothing is loaded silently.
  fs::remove(root + "/step_00000003/manifest.txt");
  expect_error([&] { load_newest_checkpoint(root, s.config, [](const std::string&) {}, {p, m, v}); },
               {"every checkpoint is damaged", "step_00000003/manifest.txt", "missing", rank});
  // An empty directory means a fresh start, and the buffers are left alone.
  std::fill(p.begin(), p.end(), 5.0f);
  EXPECT_FALSE(load_newest_checkpoint(dir.file("none"), s.config, [](const std::string&) {}, {p, m, v}));
  EXPECT_EQ(p[0], 5.0f);
}

// Loads `step_dir`; returns "" when the load is identical to `want`, else the error message.
std::string load_outcome(const std::string& step_dir, const LoadedCheckpoint& want) {
  try {
    const LoadedCheckpoint c = load_checkpoint(step_dir, want.info.model);
    EXPECT_TRUE(same_bits(c.params, want.params) && same_bits(c.adam_m, want.adam_m) &&
                same_bits(c.adam_v, want.adam_v))
        << "silently different values";
    expect_same_state(c.info.state, want.info.state);
    EXPECT_EQ(c.info.train_config_text, want.info.train_config_text);
    EXPECT_EQ(c.info.model_config_text, want.info.model_config_text);
    return "";
  } catch (const Error& e) {
    return e.what();
  }
}

TEST(Checkpoint, EveryTruncationAndSampledBitFlipIsAnErrorNamingTheFileOrHarmless) {
  ScratchDir dir;
  State s("tiny-transformerpp");
  const std::string step_dir = s.save(dir.file("ckpt"), 2).dir;
  const LoadedCheckpoint want = load_checkpoint(step_dir, s.config);
  std::mt19937 rng(2024);
  for (const std::string name : {"manifest.txt", "index.h5", "rank_00000.h5"}) {
    const std::string path = step_dir + "/" + name;
    const std::vector<uint8_t> bytes = read_bytes(path);
    const size_t size = bytes.size();
    // Truncations: the header, small sizes, and points through the file.
    std::vector<size_t> lengths = {0, 1, 7, 8, 40, 96, 512, 2048, size / 3, size / 2, size - 1};
    for (int i = 0; i < 20; ++i) lengths.push_back(rng() % size);
    for (size_t len : lengths) {
      if (len >= size) continue;
      write_bytes(path, std::vector<uint8_t>(bytes.begin(), bytes.begin() + len));
      const std::string outcome = load_outcome(step_dir, want);
      EXPECT_NE(outcome.find(path), std::string::npos)
          << "truncated to " << len << ": " << (outcome.empty() ? "loaded" : outcome);
    }
    // Bit flips: densely through the first 2 KB (superblock, root object header), then at
    // random positions.
    std::vector<size_t> positions;
    for (size_t p = 0; p < std::min<size_t>(size, 2048); p += name == "manifest.txt" ? 1 : 11)
      positions.push_back(p);
    for (int i = 0; i < (name == "manifest.txt" ? 0 : 150); ++i) positions.push_back(rng() % size);
    int errors = 0, harmless = 0;
    for (size_t p : positions) {
      std::vector<uint8_t> flipped = bytes;
      flipped[p] ^= static_cast<uint8_t>(1u << (rng() % 8));
      write_bytes(path, flipped);
      const std::string outcome = load_outcome(step_dir, want);
      if (outcome.empty()) {
        ++harmless;
      } else {
        ++errors;
        EXPECT_NE(outcome.find(path), std::string::npos) << "byte " << p << ": " << outcome;
      }
    }
    write_bytes(path, bytes);
    std::printf("%s (%zu bytes): %zu truncations refused; %zu bit flips: %d refused, %d harmless\n",
                name.c_str(), size, lengths.size(), positions.size(), errors, harmless);
    EXPECT_GT(errors, 0);
  }
  EXPECT_EQ(load_outcome(step_dir, want), "");
}

// Runs python3 (the one python3-h5py is installed for) on a script; returns its stdout.
std::string run_python(const std::string& script, const ScratchDir& dir) {
  const std::string file = dir.file("check.py"), out = dir.file("check.out");
  write_bytes(file, std::vector<uint8_t>(script.begin(), script.end()));
  const std::string cmd = fmt::format("cd / && '{}' '{}' > '{}' 2>&1", SAMBAY_PYTHON3, file, out);
  const int rc = std::system(cmd.c_str());
  const std::vector<uint8_t> text = read_bytes(out);
  EXPECT_EQ(rc, 0) << "python3 failed (is python3-h5py installed? scripts/setup.sh installs it):\n"
                   << std::string(text.begin(), text.end());
  return std::string(text.begin(), text.end());
}

TEST(Checkpoint, H5pyReadsACheckpoint) {
  ScratchDir dir;
  State s("tiny-sambay-da");
  const std::string step_dir = s.save(dir.file("ckpt"), 9).dir;
  const ParamLayout layout = build_param_layout(s.config);
  const ParamSpec& p = layout.params[find_param(layout, "layers.1.mixer.qkv_proj.weight")];
  // h5py prints the tensor (through the index's virtual dataset and in the rank file) as the
  // bit patterns of its float32 values, and some metadata.
  const std::string out = run_python(fmt::format(R"(
import h5py, numpy as np
idx = h5py.File('{0}/index.h5', 'r')
d = idx['model/layers.1/mixer/qkv_proj/weight']
print('shape', *d.shape)
print('virtual', d.is_virtual)
print('bits', *['%08x' % b for b in d[...].view(np.uint32).ravel()])
r = h5py.File('{0}/rank_00000.h5', 'r')['optim/m/layers.1/mixer/qkv_proj/weight']
print('rank bits', *['%08x' % b for b in r[...].view(np.uint32).ravel()])
print('global', *r.attrs['global_shape'], 'offset', *r.attrs['global_offset'])
print('step', idx['train_state'].attrs['step'], idx.attrs['format'].decode())
print('seed', idx['train_state'].attrs['data_seed'])
print('config', idx['config/model'][()].decode().splitlines()[1])
)",
                                                 step_dir),
                                     dir);
  std::string bits, rank_bits;
  for (int64_t i = 0; i < p.numel; ++i) {
    uint32_t u, w;
    std::memcpy(&u, &s.params[p.offset + i], 4);
    std::memcpy(&w, &s.m[p.offset + i], 4);
    bits += fmt::format(" {:08x}", u);
    rank_bits += fmt::format(" {:08x}", w);
  }
  const std::string expected =
      fmt::format("shape {} {}\nvirtual True\nbits{}\nrank bits{}\nglobal {} {} offset 0 0\n"
                  "step 9 sambay-checkpoint\nseed {}\nconfig model.d_model = 12\n",
                  p.shape[0], p.shape[1], bits, rank_bits, p.shape[0], p.shape[1],
                  s.train.data_seed);
  EXPECT_EQ(out, expected);
}

std::string text_of(const std::string& path) {
  const std::vector<uint8_t> b = read_bytes(path);
  return std::string(b.begin(), b.end());
}

TEST(Checkpoint, EveryFileNamesTheRunAndTheStepAndTheManifestChecksumsEachFile) {
  ScratchDir dir;
  State s("tiny-sambay-da");
  const std::string step_dir =
      save_checkpoint(dir.file("ckpt"),
                      {s.config, s.train_text, s.train, s.params, s.m, s.v, "0123456789abcdef"}, 3)
          .dir;
  const CheckpointInfo info = read_checkpoint_info(step_dir);
  EXPECT_EQ(info.run_id, "0123456789abcdef");
  EXPECT_EQ(info.format_version, kCheckpointFormatVersion);
  for (const char* name : {"index.h5", "rank_00000.h5"}) {
    const std::string path = step_dir + "/" + name;
    h5::Id f = h5::open_file(path);
    EXPECT_EQ(h5::read_attr_string(f, "run_id", path), "0123456789abcdef") << name;
    EXPECT_EQ(h5::read_attr_int(f, "step", path), 7) << name;
    h5::close_file(f, path);
  }
  const std::string manifest = text_of(step_dir + "/manifest.txt");
  EXPECT_EQ(manifest.rfind("sambay-checkpoint-manifest 2\nstep 7\nrun 0123456789abcdef\n", 0), 0u)
      << manifest;
  EXPECT_NE(manifest.find("file index.h5 "), std::string::npos) << manifest;
  EXPECT_NE(manifest.find(" crc32c "), std::string::npos) << manifest;
  EXPECT_NE(manifest.find(" content-crc32c "), std::string::npos) << manifest;
  // Without a run id, a save gets a new random one.
  const CheckpointInfo other =
      read_checkpoint_info(State("tiny-sambay-da").save(dir.file("b"), 7).dir);
  EXPECT_EQ(other.run_id.size(), 32u);
  EXPECT_NE(other.run_id, info.run_id);
}

TEST(Checkpoint, ARankFileOfAnotherRunAtTheSameStepIsRefused) {
  ScratchDir dir;
  State a("tiny-sambay-da"), b("tiny-sambay-da");
  b.params[3] += 1;
  a.save(dir.file("a"), 6);
  const std::string da = a.save(dir.file("a"), 7).dir, db = b.save(dir.file("b"), 7).dir;
  fs::copy_file(db + "/rank_00000.h5", da + "/rank_00000.h5", fs::copy_options::overwrite_existing);
  expect_error([&] { read_checkpoint_info(da); },
               {da + "/rank_00000.h5", "written by run", "a file from another run"});
  // Resuming takes the newest checkpoint that is whole, after reporting this one.
  std::vector<float> p(a.params.size()), m(p.size()), v(p.size());
  std::vector<std::string> reports;
  const std::optional<CheckpointInfo> c = load_newest_checkpoint(
      dir.file("a"), a.config, [&](const std::string& r) { reports.push_back(r); }, {p, m, v});
  ASSERT_TRUE(c);
  EXPECT_EQ(c->step, 6);
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_NE(reports[0].find("a file from another run"), std::string::npos) << reports[0];
}

TEST(Checkpoint, ARankFileOfAnotherSaveOfTheSameRunAndStepIsRefused) {
  ScratchDir dir;
  State s("tiny-sambay-da");
  const std::string run = "feedfeedfeedfeedfeedfeedfeedfeed";
  auto save_as_run = [&](const std::string& where) {
    return save_checkpoint(where, {s.config, s.train_text, s.train, s.params, s.m, s.v, run}, 3).dir;
  };
  const std::string first = save_as_run(dir.file("first"));
  s.m[10] *= 2;
  const std::string second = save_as_run(dir.file("second"));
  fs::copy_file(first + "/rank_00000.h5", second + "/rank_00000.h5",
                fs::copy_options::overwrite_existing);
  expect_error([&] { read_checkpoint_info(second); },
               {second + "/rank_00000.h5", "are not the ones manifest.txt recorded"});
}

TEST(Checkpoint, NonFiniteWeightsOrMomentsAreNeverWritten) {
  ScratchDir dir;
  for (const float bad : {NAN, INFINITY, -INFINITY}) {
    State s("tiny-sambay-da");
    s.v[s.v.size() - 1] = bad;
    const ParamLayout layout = build_param_layout(s.config);
    const ParamSpec& last = layout.params.back();
    expect_error([&] { s.save(dir.file("ckpt"), 7); },
                 {"rank_00000.h5:optim/v/" + tensor_group_path(last.name),
                  fmt::format("refusing to store 1 NaN or infinite values (the first at element {})",
                              last.numel - 1)});
    EXPECT_FALSE(fs::exists(dir.file("ckpt/step_00000007")));
    EXPECT_FALSE(fs::exists(dir.file("ckpt/step_00000007.tmp")));
  }
  State s("tiny-sambay-da");
  s.params[0] = NAN;
  expect_error([&] { s.save(dir.file("ckpt"), 7); },
               {"model/embedding/weight: refusing to store 1 NaN", "(the first at element 0)"});
}

TEST(Checkpoint, FormatVersion1CheckpointsStillLoad) {
  const std::string v1 = std::string(SAMBAY_FIXTURES) + "/checkpoint_v1/step_00000002";
  const CheckpointInfo info = read_checkpoint_info(v1);
  EXPECT_EQ(info.format_version, 1);
  EXPECT_EQ(info.run_id, "");
  EXPECT_EQ(info.step, 2);
  const LoadedCheckpoint old = load_checkpoint(v1, std::nullopt);
  EXPECT_EQ(old.info.state.consumed_samples, 8);
  // Saved again it becomes version 2, with the same values.
  ScratchDir dir;
  const std::string again =
      save_checkpoint(dir.file("again"), {old.info.model, old.info.train_config_text,
                                          old.info.state, old.params, old.adam_m, old.adam_v},
                      1)
          .dir;
  const LoadedCheckpoint now = load_checkpoint(again, old.info.model);
  EXPECT_EQ(now.info.format_version, 2);
  EXPECT_TRUE(same_bits(now.params, old.params));
  EXPECT_TRUE(same_bits(now.adam_m, old.adam_m));
  EXPECT_TRUE(same_bits(now.adam_v, old.adam_v));
  // A version 1 index with a version 2 manifest is a mix of two checkpoints.
  fs::copy(v1, dir.file("mixed"));
  fs::copy_file(again + "/manifest.txt", dir.file("mixed/manifest.txt"),
                fs::copy_options::overwrite_existing);
  EXPECT_THROW(read_checkpoint_info(dir.file("mixed")), Error);
}

TEST(Checkpoint, NonFiniteValuesOnDiskAreReportedAndRefused) {
  // Written before format version 2 refused them: --lr inf made every weight non-finite.
  const std::string bad = std::string(SAMBAY_FIXTURES) + "/checkpoint_v1_nonfinite/step_00000001";
  const CheckpointInfo info = read_checkpoint_info(bad);
  int64_t non_finite = 0;
  for (const auto& pieces : verify_checkpoint_data(info))
    for (const ShardReader::PieceCheck& p : pieces) non_finite += p.non_finite;
  const int64_t params = build_param_layout(info.model).total;
  EXPECT_GE(non_finite, params);
  expect_error([&] { load_checkpoint(bad, std::nullopt); },
               {bad + "/rank_00000.h5:model/", "values are NaN or infinite"});
}

}  // namespace
}  // namespace sambay
