// Parsing a subcommand's flags with Boost.Program_options, the same way for every command:
// --help prints the usage and the options; a bad flag is an error that says so.
//
// Options whose value may be left out (a boolean's `--recompute` means `--recompute true`) are
// Boost options with an implicit value. Boost takes such a value only as `--name=value`; here the
// token after the option is its value too whenever the option's own parser accepts it, so
// `--recompute`, `--recompute true` and `--recompute=false` all work, and a bare flag before a
// positional argument stays bare. Nothing here knows which options those are: any option with an
// implicit value (a boolean, or a choice with a default when bare) behaves the same.
#pragma once

#include <fmt/format.h>

#include <boost/program_options.hpp>

#include <string>
#include <vector>

namespace sambay {

// A flag: `--name` alone sets it, `--name true|false` (or 1/0, yes/no, on/off) sets the value.
boost::program_options::typed_value<bool>* flag(bool* target);

// A value whose default prints as written (0.1, not 0.10000000000000001): its shortest
// round-trip text.
template <typename T>
boost::program_options::typed_value<T>* value_with_default(T* target) {
  return boost::program_options::value(target)->default_value(*target, fmt::format("{}", *target));
}

// argv[1..] with `--name value` rewritten to `--name=value` for options with an implicit value
// whose parser accepts `value`, and such options followed by a word they do not accept (a
// positional argument) moved to the end, where nothing follows them (see above).
std::vector<std::string> join_optional_values(
    int argc, const char* const* argv, const boost::program_options::options_description& options);

// Adds --help to `options`, parses argv (argv[0] is the subcommand) with the positional
// arguments `positional` describes, and notifies. Returns false after printing the help.
bool parse_command_line(int argc, const char* const* argv,
                        boost::program_options::options_description& options,
                        const boost::program_options::positional_options_description& positional,
                        boost::program_options::variables_map& vm, const char* usage);

}  // namespace sambay
