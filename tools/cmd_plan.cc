// storemove plan: prints a fleet migration's GNU parallel job file (stream/fleet_plan.h,
// docs/fleet.md).
#include <cstdio>
#include <optional>

#include "stream/deadline.h"
#include "stream/fleet_plan.h"
#include "tools/commands.h"
#include "util/error.h"
#include "util/plural.h"
#include "util/printable.h"

namespace storemove::tools {
namespace {

struct PlanCliOptions {
  std::string fleet_file;
  std::string results_dir;
  int lock_wait = 600;
  std::optional<std::string> deadline;
};

int RunPlan(const PlanCliOptions& o) {
  stream::Fleet fleet = stream::ReadFleet(o.fleet_file);
  stream::PlanOptions options;
  options.results_dir = o.results_dir;
  if (o.lock_wait < 0 || o.lock_wait > 86400) Throw(Errc::kInvalidArgument, "--lock-wait: 0-86400 seconds");
  options.lock_wait_seconds = o.lock_wait;
  if (o.deadline) {  // resolved here, once: "+2h" is two hours from the plan, not from each job
    const auto now = stream::WallClock::now();
    const auto deadline = stream::ParseDeadline(*o.deadline, now);
    if (deadline <= now)  // @SECONDS may have passed for a job; for a plan it is a mistake
      Throw(Errc::kInvalidArgument, "--deadline '" + EscapeControls(*o.deadline) + "': already passed");
    options.deadline_epoch = int64_t(stream::WallClock::to_time_t(deadline));
  }
  std::vector<stream::PlannedJob> jobs = stream::PlanFleet(fleet, options);
  for (const stream::PlannedJob& job : jobs) std::printf("%s\n", job.command.c_str());
  int slots = 0;
  for (const stream::FleetSource& s : fleet.sources) slots += s.jobs;
  // The advice goes to stderr: stdout is the job file.
  std::fprintf(stderr, "storemove plan: %s on %s; run: parallel --joblog LOG --retries 2 -j %d < JOBS\n",
               Counted(jobs.size(), "job").c_str(), Counted(fleet.sources.size(), "source").c_str(), slots);
  return 0;
}

}  // namespace

void AddPlanCommand(CLI::App& root, Action* chosen) {
  auto o = std::make_shared<PlanCliOptions>();
  CLI::App* c = root.add_subcommand(
      "plan", "print a fleet migration as a GNU parallel job file: one `storemove migrate` per source and group, "
              "each leaving its JSON report in --results (docs/fleet.md)");
  c->add_option("--fleet", o->fleet_file,
                "fleet file: {\"sources\": [{\"host\": \":\"|SSH-HOST, \"store\": DIR, \"to\": HOST:PORT, \"key\": FILE, "
                "\"jobs\": N, \"groups\": [...], \"storemove\": CMD}]}")
      ->type_name("FILE")
      ->required();
  c->add_option("--results", o->results_dir, "directory where every job leaves its report (storemove report DIR)")
      ->type_name("DIR")
      ->required();
  c->add_option("--lock-wait", o->lock_wait,
                "seconds a rerun job waits for its group while an earlier run of it still holds it (default 600)");
  c->add_option("--deadline", o->deadline,
                "end of the maintenance window for every job (migrate --deadline; +DURATION counts from now), written "
                "into the job lines as --deadline @SECONDS")
      ->type_name("TIME");
  c->callback([o, chosen] { *chosen = [o] { return RunPlan(*o); }; });
}

}  // namespace storemove::tools
