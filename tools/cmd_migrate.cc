// storemove migrate: moves backup groups to another server while the service stays up
// (stream/migrate.h describes the phases).
#include <unistd.h>

#include <cstdio>

#include "stream/migrate.h"
#include "tools/commands.h"
#include "util/error.h"

namespace storemove::tools {
namespace {

struct MigrateCliOptions {
  std::string store_dir;
  std::string groups_file;
  int jobs = 1;
  int retries = 2;
  std::string to;
  std::string key, cert, cert_key, ca;
  bool insecure = false;
  int timeout = 60;
  int compress = 1;
  bool delete_source = false;
  std::string moved_host;
  std::string partition;
  bool json = false;
  bool verbose = false;
  std::vector<std::string> groups;
};

int RunMigrate(const MigrateCliOptions& o) {
  auto source = OpenStore(o.store_dir);
  stream::MigrateOptions options;
  options.groups_file = o.groups_file.empty() ? source->root() + "/config/backup-groups.conf" : o.groups_file;
  options.groups = o.groups;
  if (o.jobs < 1 || o.jobs > 64) Throw(Errc::kInvalidArgument, "--jobs: 1-64");
  if (o.retries < 0 || o.retries > 100) Throw(Errc::kInvalidArgument, "--retries: 0-100");
  options.jobs = o.jobs;
  options.retries = o.retries;
  options.delete_source = o.delete_source;
  options.to = stream::net::ParseEndpoint(o.to);
  options.client.credentials.key_file = o.key;
  options.client.credentials.cert_file = o.cert;
  options.client.credentials.cert_key_file = o.cert_key;
  options.client.credentials.ca_file = o.ca;
  options.client.credentials.insecure = o.insecure;
  options.client.timeout_seconds = o.timeout;
  options.client.compress_level = o.compress;
  options.moved_host = o.moved_host;
  options.partition = o.partition;
  options.live = o.verbose || ::isatty(STDERR_FILENO);
  stream::MigrateReport report = stream::Migrate(*source, options);
  std::printf("%s", o.json ? (report.Json() + "\n").c_str() : report.Text().c_str());
  return report.ok() ? 0 : 1;
}

}  // namespace

void AddMigrateCommand(CLI::App& root, Action* chosen) {
  auto o = std::make_shared<MigrateCliOptions>();
  CLI::App* c = root.add_subcommand(
      "migrate", "move backup groups to another server while users stay online: copy, hold, catch up, verify, switch");
  AddStoreOption(c, &o->store_dir);
  c->add_option("--groups", o->groups_file, "backup groups file (default STORE/config/backup-groups.conf)")->type_name("FILE");
  c->add_option("--jobs,-j", o->jobs, "groups migrated at once (default 1)");
  c->add_option("--to", o->to, "destination server (storemove serve)")->required()->type_name("HOST:PORT");
  c->add_option("--key", o->key, "pre-shared key file (storemove keygen)")->type_name("FILE");
  c->add_option("--cert", o->cert, "client certificate (mutual TLS)")->type_name("FILE");
  c->add_option("--cert-key", o->cert_key, "client certificate's private key")->type_name("FILE");
  c->add_option("--ca", o->ca, "CA certificate that signed the server's certificate")->type_name("FILE");
  c->add_flag("--insecure", o->insecure, "plain TCP without TLS (trusted test networks only)");
  c->add_option("--timeout", o->timeout, "seconds without progress before a session is abandoned (default 60)");
  c->add_option("--compress", o->compress, "zstd level for the sessions (default 1)");
  c->add_option("--retries", o->retries, "further attempts for a failed group (default 2)");
  c->add_flag("--delete-source", o->delete_source, "delete verified users from this store after the switch");
  c->add_option("--moved-host", o->moved_host, "host recorded as moved:HOST (default: the --to host)")->type_name("HOST");
  c->add_option("--partition", o->partition, "destination partition for new users")->type_name("NAME");
  c->add_flag("--json", o->json, "print the final report as JSON");
  c->add_flag("-v,--verbose", o->verbose, "live display on stderr even when it is not a terminal");
  c->add_option("groups", o->groups, "groups to migrate (default: every group in the file)");
  c->callback([o, chosen] { *chosen = [o] { return RunMigrate(*o); }; });
}

}  // namespace storemove::tools
