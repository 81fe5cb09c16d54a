// storemove-local: `deliver` and `import` alone, in a binary linked without the network and TLS
// libraries. An MTA runs a delivery once per message and a script may import once per file: there
// the start of the process is most of the work, and loading libssl and libcrypto alone costs
// ~9 ms CPU of a delivery's ~35 (docs/performance.md, "Import (issue 12)"). The subcommands are
// storemove's own, option for option.
#include "tools/commands.h"
#include "tools/run_command_line.h"

int main(int argc, char** argv) {
  using namespace storemove;
  CLI::App app{"storemove-local: storemove deliver and import, without the network libraries (starts faster)",
               "storemove-local"};
  tools::Action action;
  tools::AddDeliverCommand(app, &action);
  tools::AddImportCommand(app, &action);
  return tools::RunCommandLine(app, action, argc, argv);
}
