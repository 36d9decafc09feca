// metrics.jsonl records (kinds, wall time, NaN as null, the resolved config) and TensorBoard
// event files read back by the tensorboard package's own reader (skipped with a message where
// it is not installed).
#include "io/tensorboard.h"
#include "launch/run_metrics.h"
#include "launch/train_config.h"
#include "tests/io_test_util.h"

#include <sys/wait.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <optional>

namespace sambay {
namespace {

using testing::ScratchDir;

// The scalars of the event files in `dir` as the tensorboard package reads them, or nothing
// (with the reason in `skip`) when it is not installed.
std::optional<Json> read_events(const std::string& dir, std::string& skip) {
  const std::string out = dir + "/read.json";
  const std::string cmd = fmt::format("'{}' '{}/tests/tensorboard/read_events.py' '{}' > '{}' 2>&1",
                                      SAMBAY_PYTHON3, SAMBAY_SOURCE_DIR, dir, out);
  const int status = std::system(cmd.c_str());
  const std::string text = testing::read_text(out);
  std::filesystem::remove(out);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
    skip = text;
    return std::nullopt;
  }
  EXPECT_EQ(status, 0) << text;
  return parse_json(text, out);
}

TEST(RunMetrics, RecordsHaveKindStepWallTimeAndNullForNonFinite) {
  ScratchDir dir;
  {
    std::ofstream(dir.file("metrics.jsonl")) << R"({"kind":"step","step":1,"lo)";  // cut by a kill
  }
  RunLog log(true, LogErrorPolicy::stop);
  RunMetrics m(log);
  m.open(dir.path.string(), false);
  const double before =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  Json r = metrics_record("step", 7);
  r["loss"] = std::nan("");
  r["grad_norm"] = INFINITY;
  r["lr"] = 0.1;
  m.write(r);
  Json v = metrics_record("valid", 7);
  v["valid_loss"] = 2.5;
  m.write(v);
  const std::string text = testing::read_text(dir.file("metrics.jsonl"));
  EXPECT_NE(text.find("\"loss\":null,\"grad_norm\":null,\"lr\":0.1"), std::string::npos) << text;
  std::ifstream in(dir.file("metrics.jsonl"));
  std::string cut;
  std::getline(in, cut);  // the cut line stays, ended
  EXPECT_EQ(cut, R"({"kind":"step","step":1,"lo)");
  std::vector<Json> rs;
  for (std::string line; std::getline(in, line);) rs.push_back(parse_json(line, "metrics.jsonl"));
  ASSERT_EQ(rs.size(), 2u);
  EXPECT_EQ(rs[0]["kind"], "step");
  EXPECT_EQ(rs[0]["step"], 7);
  EXPECT_TRUE(rs[0]["loss"].is_null());
  EXPECT_GE(rs[0]["wall_time"].get<double>(), before);
  EXPECT_LT(rs[0]["wall_time"].get<double>(), before + 60);
  EXPECT_EQ(rs[1]["kind"], "valid");
  EXPECT_EQ(rs[1]["valid_loss"], 2.5);
}

TEST(RunMetrics, ConfigAsTypedJson) {
  TrainConfig c;
  c.data = {"a:0.7", "b:0.3"};
  c.model = model_preset(c.model_preset);
  c.recompute = "all";
  c.tensorboard = true;
  const Json j = train_config_json(c);
  EXPECT_EQ(j["data"], (Json{"a:0.7", "b:0.3"}));
  EXPECT_EQ(j["lr"], 0.001);
  EXPECT_EQ(j["min_lr_ratio"], 0.1);
  EXPECT_EQ(j["steps"], 1000);
  EXPECT_EQ(j["recompute"], "all");
  EXPECT_EQ(j["tensorboard"], true);
  EXPECT_EQ(j["schedule"], "cosine");
  EXPECT_EQ(j["model"], "demo-sambay-da");
  EXPECT_EQ(j["model.d_model"], 128);
}

TEST(TensorBoard, ScalarsReadBackByTensorBoard) {
  ScratchDir dir;
  std::string path;
  {
    TensorBoardWriter w(dir.file("tb"));
    path = w.path();
    EXPECT_EQ(w.scalars(1, 1000.5, {{"train/loss", 5.25}, {"train/lr", 1e-3}}), 0);
    EXPECT_EQ(w.scalars(2, 1001.5, {{"train/loss", 4.75}, {"train/lr", 2e-3}}), 0);
    EXPECT_EQ(w.scalars(300000000000, 1002.5, {{"train/loss", std::nan("")}, {"valid/loss", 0.1}}), 0);
  }
  EXPECT_EQ(std::filesystem::path(path).filename().string().rfind("events.out.tfevents.", 0), 0u);
  std::string skip;
  const std::optional<Json> got = read_events(dir.file("tb"), skip);
  if (!got) GTEST_SKIP() << skip;
  EXPECT_EQ((*got)["events"], 4);  // the version event and three: every checksum accepted
  const Json& tags = (*got)["tags"];
  EXPECT_EQ(tags["train/loss"],
            (Json{{1, 1000.5, 5.25}, {2, 1001.5, 4.75}, {300000000000, 1002.5, nullptr}}));
  EXPECT_EQ(tags["train/lr"][0][2], static_cast<double>(1e-3f));  // float32, as TensorBoard keeps
  EXPECT_EQ(tags["valid/loss"], (Json{{300000000000, 1002.5, static_cast<double>(0.1f)}}));

  // A flipped bit ends the reading at the damaged record.
  std::vector<uint8_t> bytes = testing::read_bytes(path);
  bytes[bytes.size() - 10] ^= 0x04;
  testing::write_bytes(path, bytes);
  EXPECT_EQ((*read_events(dir.file("tb"), skip))["events"], 3);
}

TEST(TensorBoard, RunMetricsSendsStepAndValidRecords) {
  ScratchDir dir;
  {
    RunLog log(true, LogErrorPolicy::stop);
    RunMetrics m(log);
    m.open(dir.path.string(), true);
    Json start = metrics_record("run_start", 0);
    start["config"] = {{"lr", 0.1}};
    m.write(start);  // no scalars
    Json s = metrics_record("step", 10);
    s["loss"] = 3.5, s["lr"] = 0.25, s["grad_norm"] = 1.5, s["tokens_per_s"] = 1000.0,
    s["flops_per_s"] = 2e9, s["mfu"] = 0.375, s["memory_mib"] = 512.0, s["tokens"] = 4096;
    m.write(s);
    Json v = metrics_record("valid", 10);
    v["valid_loss"] = 3.75;
    m.write(v);
  }
  std::string skip;
  const std::optional<Json> got = read_events(dir.file("tensorboard"), skip);
  if (!got) GTEST_SKIP() << skip;
  const Json& tags = (*got)["tags"];
  const std::pair<const char*, double> want[] = {
      {"train/loss", 3.5},           {"train/lr", 0.25},          {"train/grad_norm", 1.5},
      {"train/tokens_per_s", 1000},  {"train/flops_per_s", 2e9},  {"train/mfu", 0.375},
      {"train/memory_mib", 512},     {"valid/loss", 3.75}};
  for (const auto& [tag, value] : want) {
    ASSERT_TRUE(tags.contains(tag)) << tag << " in " << tags.dump();
    EXPECT_EQ(tags[tag][0][0], 10) << tag;
    EXPECT_EQ(tags[tag][0][2], value) << tag;
  }
  EXPECT_FALSE(tags.contains("train/tokens"));  // a count, not a curve
}

}  // namespace
}  // namespace sambay
