#include "core/size_limits.h"

#include <fmt/format.h>

#include "core/check.h"

namespace sambay {

void check_size_product(const std::string& what, std::initializer_list<SizeFactor> factors,
                        double bytes_per_element) {
  double bytes = bytes_per_element;
  const SizeFactor* largest = nullptr;
  std::string terms;
  for (const SizeFactor& f : factors) {
    bytes *= f.value;
    // Named: the largest factor that is an option ("--..."), not a derived count.
    if (f.option[0] == '-' && (!largest || f.value > largest->value)) largest = &f;
    terms += fmt::format("{}{} {:.6g}{}", terms.empty() ? "" : " x ", f.option, f.value,
                         f.note ? fmt::format(" ({})", f.note) : "");
  }
  if (!(bytes <= kMaxPlannedBytes) && largest)
    fail(
        "option {}: {:.6g}{} is too large: {} would take {} x {:.6g} bytes = {:.3g} bytes, "
        "beyond the 2^62 bytes that sizes are planned in",
        largest->option, largest->value, largest->note ? fmt::format(" ({})", largest->note) : "",
        what, terms, bytes_per_element, bytes);
}

}  // namespace sambay
