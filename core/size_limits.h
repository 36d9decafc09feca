// Size products that must not wrap around. Buffers are planned from products of options
// (micro_batch x seq_len x d_model x layers, vocab x d_model, ...) computed in int64_t; an
// enormous option makes such a product wrap to a small or negative number, and memory planned
// from it is then written past its end. These checks run on the options before anything is
// planned: each product is formed in double precision (which cannot wrap) and compared with a
// limit well inside int64_t, so that the planner's own sums of such products cannot wrap either.
#pragma once

#include <initializer_list>
#include <string>

namespace sambay {

// Bytes any one planned quantity may reach: 2^62, a quarter of int64_t's range.
constexpr double kMaxPlannedBytes = 4611686018427387904.0;

// One factor of a size product: the option it comes from (as the user writes it, e.g.
// "--micro_batch" or "--model.vocab") and its value.
struct SizeFactor {
  const char* option;
  double value;
  const char* note = nullptr;  // what the value stands for, when it is not the option's own
};

// Fails with "option <opt>: <value> is too large: <what> would be <a> x <b> x ... = <p> bytes,
// beyond the 2^62 bytes sizes are planned in", naming the largest factor's option.
// bytes_per_element multiplies the product (the element size).
void check_size_product(const std::string& what, std::initializer_list<SizeFactor> factors,
                        double bytes_per_element = 1);

}  // namespace sambay
