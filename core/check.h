// Error reporting: every failed check throws with a message that says what was expected.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace sambay {

// Thrown for bad input (config, flag, data, checkpoint) and violated preconditions.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace sambay

// SAMBAY_CHECK(cond, "fmt", args...): throws sambay::Error naming the condition and the source line.
#define SAMBAY_CHECK(cond, ...)                                                             \
  do {                                                                                      \
    if (!(cond))                                                                            \
      throw ::sambay::Error(fmt::format("{}:{}: check failed: {}: {}", __FILE__, __LINE__, \
                                        #cond, fmt::format(__VA_ARGS__)));                  \
  } while (0)
