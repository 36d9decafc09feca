// The PyTorch anchor's figures (what a user would run instead of sambay), read from the output of
// the anchor script run in the same device call, so that sambay_bench prints each of its results
// beside the anchor's and their ratio. Keys name the anchor and its shape:
//   "attention cudnn B1 L4096 H16 d128 dv128 fwd" (also flash, mem-efficient; fwd, bwd)
//   "attention flex w512 B1 L8192 H16 d128 fwd"
//   "ce n8192 V200064 d2560 fwd"
//   "tpp B4 L4096 step" (the torch.compile Transformer++ training step)
// and "... fwd+bwd" is the sum of the two.
#pragma once

#include <map>
#include <optional>
#include <string>

namespace sambay::bench {

class Anchors {
 public:
  // Reads every anchor line of the script's output; other lines are ignored. Throws naming the
  // file when it cannot be read or holds no anchor line.
  static Anchors read(const std::string& path);
  // Milliseconds of the anchor named `key` (see above), if the file had it.
  std::optional<double> ms(const std::string& key) const;
  bool empty() const { return ms_.empty(); }

 private:
  std::map<std::string, double> ms_;
};

}  // namespace sambay::bench
