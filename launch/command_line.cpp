#include "launch/command_line.h"

#include "core/check.h"

#include <boost/any.hpp>

#include <iostream>

namespace sambay {

namespace po = boost::program_options;

po::typed_value<bool>* flag(bool* target) {
  return po::value(target)
      ->value_name("true|false")
      ->default_value(*target, *target ? "true" : "false")
      ->implicit_value(true, "true");
}

std::vector<std::string> join_optional_values(int argc, const char* const* argv,
                                              const po::options_description& options) {
  std::vector<std::string> args, bare_flags;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const po::option_description* o =
        arg.size() > 2 && arg.compare(0, 2, "--") == 0 && arg.find('=') == std::string::npos
            ? options.find_nothrow(arg.substr(2), false)
            : nullptr;
    if (!o || o->semantic()->min_tokens() != 0 || o->semantic()->max_tokens() == 0 ||
        i + 1 >= argc || argv[i + 1][0] == '-') {
      args.push_back(arg);
      continue;
    }
    try {
      boost::any value;
      o->semantic()->parse(value, {argv[i + 1]}, false);
      args.push_back(arg + "=" + argv[++i]);
    } catch (const po::error&) {
      // Not a value of this option: the flag stands alone. Boost would take the next word as
      // its value all the same, so the flag moves behind every other argument.
      bare_flags.push_back(arg);
    }
  }
  args.insert(args.end(), bare_flags.begin(), bare_flags.end());
  return args;
}

bool parse_command_line(int argc, const char* const* argv, po::options_description& options,
                        const po::positional_options_description& positional,
                        po::variables_map& vm, const char* usage) {
  options.add_options()("help,h", "print the options and exit");
  try {
    po::store(po::command_line_parser(join_optional_values(argc, argv, options))
                  .options(options)
                  .positional(positional)
                  .run(),
              vm);
    if (vm.count("help")) {
      std::cout << usage << "\n" << options;
      return false;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    fail("command line: {} (see --help)", e.what());
  }
  return true;
}

}  // namespace sambay
