// storemove report: merges the job reports a fleet migration left in its results directory
// (stream/fleet_report.h, docs/fleet.md).
#include <cstdio>

#include "stream/fleet_report.h"
#include "tools/commands.h"
#include "util/printable.h"

namespace storemove::tools {
namespace {

struct ReportCliOptions {
  std::string dir;
  bool json = false;
  size_t slowest = 5;
};

int RunReport(const ReportCliOptions& o) {
  stream::FleetReport report = stream::MergeFleetReports(o.dir);
  std::printf("%s", o.json ? (report.Json(o.slowest) + "\n").c_str() : report.Text(o.slowest).c_str());
  // Broken files are also named on stderr, one line each, for whoever reads only that.
  for (const std::string& b : report.broken)
    std::fprintf(stderr, "storemove: report: %s/%s\n", EscapeControls(o.dir).c_str(), EscapeControls(b).c_str());
  return report.ok() ? 0 : 1;
}

}  // namespace

void AddReportCommand(CLI::App& root, Action* chosen) {
  auto o = std::make_shared<ReportCliOptions>();
  CLI::App* c = root.add_subcommand(
      "report", "merge a fleet migration's job reports (storemove plan --results DIR): users, messages, bytes, "
                "failures, slowest groups, hold times; exit 1 (fleet: NOT DONE) when a job failed, a report is broken or "
                "partial, or users of the sources are in no group");
  c->add_option("dir", o->dir, "the results directory")->type_name("DIR")->required();
  c->add_flag("--json", o->json, "print the merged report as JSON");
  c->add_option("--slowest", o->slowest, "slowest groups shown (default 5)");
  c->callback([o, chosen] { *chosen = [o] { return RunReport(*o); }; });
}

}  // namespace storemove::tools
