#include "launch/command_line.h"

#include "core/check.h"

#include <iostream>

namespace sambay {

namespace po = boost::program_options;

bool parse_command_line(int argc, const char* const* argv, po::options_description& options,
                        const po::positional_options_description& positional,
                        po::variables_map& vm, const char* usage) {
  options.add_options()("help,h", "print the options and exit");
  try {
    po::store(po::command_line_parser(argc, argv).options(options).positional(positional).run(),
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
