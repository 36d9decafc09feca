// Parsing a subcommand's flags with Boost.Program_options, the same way for every command:
// --help prints the usage and the options; a bad flag is an error that says so.
#pragma once

#include <boost/program_options.hpp>

namespace sambay {

// Adds --help to `options`, parses argv (argv[0] is the subcommand) with the positional
// arguments `positional` describes, and notifies. Returns false after printing the help.
bool parse_command_line(int argc, const char* const* argv,
                        boost::program_options::options_description& options,
                        const boost::program_options::positional_options_description& positional,
                        boost::program_options::variables_map& vm, const char* usage);

}  // namespace sambay
