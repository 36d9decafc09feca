// The one reader of config text (core/config_file.h) and what reads through it: sambay train's
// --config files, the train config saved in run directories and checkpoints, and the model
// config text of checkpoints. Every refusal names the file and line.
#include "core/config_file.h"
#include "io/checkpoint.h"
#include "launch/train_config.h"
#include "tests/io_test_util.h"

#include <fstream>

namespace sambay {
namespace {

using testing::expect_error;
using testing::ScratchDir;

TEST(ConfigFile, SectionsCommentsAndErrors) {
  const ConfigFile ini =
      parse_config_text("a = 1 # one\n; note\n[s]\nb = x y\nb = z\nc = p;q\n", "f.ini");
  EXPECT_EQ(ini.get("a"), "1");
  EXPECT_EQ(ini.get("s.b"), "z");
  EXPECT_EQ(ini.all("s.b"), (std::vector<std::string>{"x y", "z"}));
  EXPECT_EQ(ini.get("s.c"), "p;q");  // ';' starts a comment only at the start of a line
  EXPECT_EQ(ini.section("s").size(), 3u);
  EXPECT_EQ(ini.entries[2].line, 5);
  EXPECT_EQ(split_list("4, 8,12 16"), (std::vector<std::string>{"4", "8", "12", "16"}));
  expect_error([] { parse_config_text("a = 1\n[open\n", "f.ini"); }, {"f.ini:2:", "[open"});
  expect_error([] { parse_config_text("\nnovalue\n", "f.ini"); }, {"f.ini:2:", "novalue"});
  expect_error([&] { ini.get_int("s.b", 0); }, {"f.ini", "s.b", "not an integer"});
  expect_error([&] { ini.require("missing"); }, {"f.ini", "missing"});
  expect_error([] { read_config_file("/nonexistent/x.ini"); }, {"/nonexistent/x.ini"});
}

bool parse(std::vector<std::string> args, TrainConfig& c) {
  args.insert(args.begin(), "sambay train");
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  return parse_train_config(static_cast<int>(argv.size()), argv.data(), c);
}

void write_text(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

TEST(TrainConfigFile, FileValuesSectionsAndRepeatedKeysFlagsOverride) {
  ScratchDir dir;
  const std::string f = dir.file("run.ini");
  write_text(f,
             "# a tiny run\nmodel = tiny-sambay-da\ndata = a:1\ndata = b:2  # two files\n"
             "seq_len = 32\nsteps = 10\nwarmup = 2\nlr = 0.002\n[model]\nd_ff = 24\n");
  TrainConfig c;
  ASSERT_TRUE(parse({"--config", f, "--lr", "0.001"}, c));
  EXPECT_EQ(c.data, (std::vector<std::string>{"a:1", "b:2"}));
  EXPECT_EQ(c.seq_len, 32);
  EXPECT_EQ(c.lr, 0.001);  // the flag wins over the file
  EXPECT_EQ(c.model_preset, "tiny-sambay-da");
  EXPECT_EQ(c.model.d_ff, 24);  // [model] d_ff is model.d_ff
}

TEST(TrainConfigFile, UnknownOrMisplacedKeysAreRefusedWithFileAndLine) {
  ScratchDir dir;
  const std::string f = dir.file("run.ini");
  write_text(f, "data = a\n\nlrr = 0.1\n");
  TrainConfig c;
  expect_error([&] { parse({"--config", f}, c); }, {f + ":3:", "unknown option 'lrr'"});
  write_text(f, "data = a\n[model]\nwidth = 3\n");
  expect_error([&] { parse({"--config", f}, c); }, {f + ":3:", "unknown option 'model.width'"});
  write_text(f, "data = a\nconfig = other.ini\n");
  expect_error([&] { parse({"--config", f}, c); }, {f + ":2:", "unknown option 'config'"});
  write_text(f, "data = a\nsteps = many\n");
  expect_error([&] { parse({"--config", f}, c); }, {f, "steps"});
  expect_error([&] { parse({"--config", dir.file("absent.ini")}, c); },
               {dir.file("absent.ini"), "cannot open"});
}

// A run directory's config.ini (train_config_to_text) given back as --config reproduces the run.
TEST(TrainConfigFile, TheSavedConfigReadsBackToTheSameConfig) {
  ScratchDir dir;
  TrainConfig c;
  ASSERT_TRUE(parse({"--model", "tiny-sambay-da", "--data", "x:0.5", "--data", "y", "--seq_len",
                     "32", "--steps", "7", "--warmup", "1", "--lr", "0.1", "--model.d_ff", "20",
                     "--weight_decay", "0.05"},
                    c));
  const std::string text = train_config_to_text(c);
  write_text(dir.file("config.ini"), text);
  TrainConfig back;
  ASSERT_TRUE(parse({"--config", dir.file("config.ini")}, back));
  EXPECT_EQ(train_config_to_text(back), text);
}

TEST(ModelConfigText, ReadsFieldsAndRefusesOtherKeysWithTheLine) {
  ModelConfig m = model_preset("tiny-sambay-da");
  m.d_ff = 20;
  EXPECT_EQ(model_config_to_text(parse_model_config_text(model_config_to_text(m), "ckpt")),
            model_config_to_text(m));
  expect_error([] { parse_model_config_text("model.d_model = 8\nlr = 1\n", "ckpt:config/model"); },
               {"ckpt:config/model:2:", "'lr' is not a model field"});
}

}  // namespace
}  // namespace sambay
