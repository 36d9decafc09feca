// Error reporting for the CUDA ops. The .cu files cannot include core/check.h (nvcc cannot
// compile fmt's compile-time format checks), so they build the message themselves and throw
// through this host function, which raises the same sambay::Error as SAMBAY_CHECK.
#pragma once

#include <string>

namespace sambay {

[[noreturn]] void fail_message(const std::string& message);

}  // namespace sambay

// SAMBAY_CUDA_ARG_CHECK(cond, message): for argument checks in .cu files; `message` is a
// std::string expression that names the offending values (built with std::to_string).
#define SAMBAY_CUDA_ARG_CHECK(cond, message)                                              \
  do {                                                                                    \
    if (!(cond))                                                                          \
      ::sambay::fail_message(std::string(__FILE__) + ":" + std::to_string(__LINE__) +     \
                             ": check failed: " #cond ": " + (message));                  \
  } while (0)
