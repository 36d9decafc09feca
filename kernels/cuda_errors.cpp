#include "kernels/cuda_errors.h"

#include "core/check.h"

namespace sambay {

void fail_message(const std::string& message) { throw Error(message); }

}  // namespace sambay
