#include "launch/run_metrics.h"

#include "core/check.h"
#include "launch/train_config.h"

#include <charconv>
#include <chrono>
#include <filesystem>

namespace sambay {

namespace {

// An INI value as the JSON value it reads as.
Json typed_value(const std::string& v) {
  if (v == "true") return true;
  if (v == "false") return false;
  int64_t i = 0;
  if (auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), i);
      ec == std::errc() && p == v.data() + v.size())
    return i;
  double d = 0;
  if (auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), d);
      ec == std::errc() && p == v.data() + v.size() && !v.empty())
    return d;
  return v;
}

// The scalars a record shows in TensorBoard, as (tag, value).
std::vector<std::pair<std::string, double>> tensorboard_scalars(const Json& r) {
  std::vector<std::pair<std::string, double>> out;
  const std::string kind = r.value("kind", "");
  if (kind == "valid") {
    if (const Json* v = json_find(r, "valid_loss"))
      out.emplace_back("valid/loss", v->is_number() ? v->get<double>() : NAN);
  } else if (kind == "step") {
    for (const char* key : {"loss", "lr", "grad_norm", "tokens_per_s", "flops_per_s", "mfu",
                            "memory_mib", "step_ms"})
      if (const Json* v = json_find(r, key))
        out.emplace_back(std::string("train/") + key, v->is_number() ? v->get<double>() : NAN);
  }
  return out;
}

}  // namespace

Json train_config_json(const TrainConfig& c) {
  Json out = Json::object();
  const std::string text = train_config_to_text(c);
  for (size_t a = 0, b; a < text.size(); a = b + 1) {
    b = text.find('\n', a);
    if (b == std::string::npos) b = text.size();
    const std::string line = text.substr(a, b - a);
    const size_t eq = line.find(" = ");
    if (eq == std::string::npos) continue;
    const std::string key = line.substr(0, eq);
    if (key == "data")
      out[key].push_back(line.substr(eq + 3));
    else
      out[key] = typed_value(line.substr(eq + 3));
  }
  return out;
}

Json metrics_record(const char* kind, int64_t step) {
  const double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  return Json{{"kind", kind}, {"step", step}, {"wall_time", now}};
}

void RunMetrics::open(const std::string& out_dir, bool tensorboard) {
  namespace fs = std::filesystem;
  log_.open_metrics((fs::path(out_dir) / "metrics.jsonl").string());
  if (tensorboard)
    tensorboard_ = std::make_unique<TensorBoardWriter>((fs::path(out_dir) / "tensorboard").string());
}

void RunMetrics::write(const Json& record) {
  log_.record(record.dump());
  if (!tensorboard_) return;
  const auto scalars = tensorboard_scalars(record);
  if (scalars.empty()) return;
  if (const int err = tensorboard_->scalars(record["step"].get<int64_t>(),
                                            record["wall_time"].get<double>(), scalars)) {
    // Events after a cut one would be unreadable: the file is given up.
    log_.file_failed(tensorboard_->path(), err);
    tensorboard_.reset();
  }
}

}  // namespace sambay
