// `sambay ckpt ...`: inspect, export and import checkpoints, and the checkpoint I/O benchmark.
#pragma once

namespace sambay {

// argv[0] is "ckpt"; returns the process exit code.
int cmd_ckpt(int argc, const char* const* argv);

// `sambay ckpt bench` (launch/ckpt_bench.cpp); argv[0] is "bench".
int cmd_ckpt_bench(int argc, const char* const* argv);

}  // namespace sambay
