// The run directory before and during training: the exclusive lock (a second holder is
// refused naming the first; a refused start leaves no trace), leftovers of interrupted writes,
// and the checked writes of the run's log (launch/run_dir.h, launch/run_log.h).
#include <unistd.h>

#include <filesystem>
#include <optional>

#include "launch/run_dir.h"
#include "launch/run_log.h"
#include "tests/io_test_util.h"

namespace sambay {
namespace {

namespace fs = std::filesystem;
using testing::expect_error;
using testing::read_bytes;
using testing::ScratchDir;
using testing::write_bytes;

std::string text_of(const std::string& path) {
  const std::vector<uint8_t> b = read_bytes(path);
  return std::string(b.begin(), b.end());
}

TEST(RunDirLock, ASecondHolderIsRefusedNamingTheFirst) {
  ScratchDir dir;
  const std::string run = dir.file("run");
  std::optional<RunDirLock> first(std::in_place, run);
  first->accept();
  EXPECT_NE(text_of(run + "/trainer.lock").find(fmt::format("pid {} on ", getpid())),
            std::string::npos);
  // flock locks belong to the open file: a second open in the same process conflicts too.
  expect_error([&] { RunDirLock second(run); },
               {"option --out_dir " + run, "another trainer is using this run directory",
                fmt::format("pid {} on ", getpid()), run + "/trainer.lock"});
  EXPECT_TRUE(fs::exists(run + "/trainer.lock"));  // the refused one leaves the holder's file
  first.reset();
  EXPECT_FALSE(fs::exists(run + "/trainer.lock"));
  EXPECT_TRUE(fs::is_directory(run));  // accepted: the directory stays
  EXPECT_NO_THROW(RunDirLock again(run));
}

TEST(RunDirLock, ARunThatIsNotAcceptedLeavesNoTrace) {
  ScratchDir dir;
  { RunDirLock lock(dir.file("a/b/run")); }
  EXPECT_FALSE(fs::exists(dir.file("a")));
  fs::create_directories(dir.file("kept"));
  { RunDirLock lock(dir.file("kept")); }
  EXPECT_TRUE(fs::is_directory(dir.file("kept")));
  EXPECT_TRUE(fs::is_empty(dir.file("kept")));
  write_bytes(dir.file("file"), {1});
  expect_error([&] { RunDirLock lock(dir.file("file")); }, {"exists and is not a directory"});
  expect_error([&] { RunDirLock lock(dir.file("file/run")); },
               {"cannot create", dir.file("file/run")});
}

TEST(RunDir, WritabilityIsAskedWithoutWriting) {
  ScratchDir dir;
  EXPECT_NO_THROW(
      check_writable_directory(dir.file("missing/checkpoints"), "the checkpoints directory"));
  EXPECT_FALSE(fs::exists(dir.file("missing")));
  write_bytes(dir.file("plain"), {1});
  expect_error(
      [&] { check_writable_directory(dir.file("plain/checkpoints"), "the checkpoints directory"); },
      {"the checkpoints directory " + dir.file("plain/checkpoints"), "is not a directory"});
  // Permissions bind only a process that is not root.
  if (geteuid() != 0) {
    fs::create_directories(dir.file("ro"));
    fs::permissions(dir.file("ro"), fs::perms::owner_read | fs::perms::owner_exec);
    expect_error([&] { check_writable_directory(dir.file("ro"), "option --out_dir"); },
                 {"option --out_dir " + dir.file("ro"), "cannot write there", "Permission denied"});
    fs::permissions(dir.file("ro"), fs::perms::owner_all);
  }
  EXPECT_EQ(dir.listing(), (std::vector<std::string>{"plain"}));
}

TEST(RunDir, LeftoversOfInterruptedWritesAreRemovedAndNothingElse) {
  ScratchDir dir;
  const std::string run = dir.file("run");
  fs::create_directories(run + "/checkpoints/step_00000004");
  fs::create_directories(run + "/checkpoints/step_00000005.tmp");
  for (const char* f : {"config.ini", "config.ini.tmp.a1B2c3", "metrics.jsonl", "notes.tmp.txt",
                        "checkpoints/latest", "checkpoints/latest.tmp.ZZZZZZ",
                        "checkpoints/latest.tmp.ZZZZZ", "checkpoints/step_00000005.tmp/index.h5"})
    write_bytes(run + "/" + f, {1});
  std::vector<std::string> removed = remove_run_leftovers(run);
  std::sort(removed.begin(), removed.end());
  EXPECT_EQ(removed, (std::vector<std::string>{run + "/checkpoints/latest.tmp.ZZZZZZ",
                                               run + "/checkpoints/step_00000005.tmp",
                                               run + "/config.ini.tmp.a1B2c3"}));
  for (const char* kept : {"config.ini", "metrics.jsonl", "notes.tmp.txt", "checkpoints/latest",
                           "checkpoints/latest.tmp.ZZZZZ", "checkpoints/step_00000004"})
    EXPECT_TRUE(fs::exists(run + "/" + kept)) << kept;
}

TEST(RunLog, ARecordAfterACutLineStartsOnAFreshLine) {
  ScratchDir dir;
  const std::string path = dir.file("metrics.jsonl");
  write_bytes(path, {'{', '"', 's'});  // killed mid-record
  RunLog log(true, LogErrorPolicy::stop);
  log.open_metrics(path);
  log.record(R"({"kind":"resume","step":3})");
  log.record(R"({"step":4})");
  EXPECT_EQ(text_of(path), "{\"s\n{\"kind\":\"resume\",\"step\":3}\n{\"step\":4}\n");
  EXPECT_EQ(log.failure(), "");
  RunLog other_rank(false, LogErrorPolicy::stop);
  other_rank.open_metrics(dir.file("never"));
  other_rank.record("{}");
  EXPECT_FALSE(fs::exists(dir.file("never")));
}

TEST(RunLog, AFailedWriteStopsOrWarnsOnce) {
  RunLog stop(true, LogErrorPolicy::stop);
  stop.open_metrics("/dev/full");
  stop.record(R"({"step":1})");
  EXPECT_EQ(stop.failure(), "/dev/full: write failed: No space left on device");
  stop.record(R"({"step":2})");
  EXPECT_EQ(stop.failure(), "/dev/full: write failed: No space left on device");  // the first

  RunLog carry_on(true, LogErrorPolicy::carry_on);
  carry_on.open_metrics("/dev/full");
  ::testing::internal::CaptureStderr();
  carry_on.record(R"({"step":1})");
  carry_on.record(R"({"step":2})");
  const std::string warned = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(carry_on.failure(), "");
  EXPECT_NE(warned.find("warning: /dev/full: write failed: No space left on device; training "
                        "continues (--on_log_error continue)"),
            std::string::npos)
      << warned;
  EXPECT_EQ(warned.find("warning", warned.find("warning") + 1), std::string::npos) << warned;
  expect_error([] { parse_log_error_policy("ignore"); }, {"option --on_log_error", "'ignore'"});
}

}  // namespace
}  // namespace sambay
