// storemove keygen: a new pre-shared key for serve / backup --to (docs/transport.md §3).
#include <cstdio>

#include "stream/net.h"
#include "tools/commands.h"

namespace storemove::tools {

void AddKeygenCommand(CLI::App& root, Action* chosen) {
  auto file = std::make_shared<std::string>();
  CLI::App* c = root.add_subcommand("keygen", "write a new random pre-shared key (32 bytes, hex, mode 0600)");
  c->add_option("file", *file, "key file to create; an existing file is never overwritten")->required()->type_name("FILE");
  c->callback([file, chosen] {
    *chosen = [file] {
      stream::net::WriteKeyFile(*file);
      std::fprintf(stderr, "keygen: wrote %s (mode 0600); copy it to both hosts over a secure channel\n", file->c_str());
      return 0;
    };
  });
}

}  // namespace storemove::tools
