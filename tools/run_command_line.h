// What every storemove binary's main does around its subcommands: parse, raise the open-files
// limit, run the chosen action, and turn any failure into one line "<program>: <message>" on
// stderr with a sysexits(3) status (storemove::ExitStatus).
#pragma once

#include <CLI/CLI.hpp>

#include "tools/commands.h"

namespace storemove::tools {

// `app` has its subcommands added, each storing its action in `action`.
int RunCommandLine(CLI::App& app, const Action& action, int argc, char** argv);

}  // namespace storemove::tools
