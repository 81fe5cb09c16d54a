// `storemove plan` (stream/fleet_plan.h): the fleet file, the sources' backup-groups.conf and an
// earlier RESULTS/.plan, all hostile. The input is split at its first two NUL bytes into A, B, C:
// ReadFleet of a file holding A; PlanFleet of what it accepts into a results directory under
// the scratch directory, every source's backup-groups.conf reading as B (no ssh, no store), and
// RESULTS/.plan holding C beforehand when there is a second NUL.
// Invariants: only storemove::Error escapes, with one-line messages; a fleet ReadFleet accepts
// has what its checks promise (absolute store and key, jobs 1-64, a port); every planned job is
// one line (GNU parallel reads one job per line) of a report in the results directory; the plan
// written lists every job's report after the magic line, and `storemove report` reads it back
// without calling it damaged, naming every job's report as missing.
#include <algorithm>
#include <filesystem>
#include <set>
#include <string>

#include "stream/fleet_plan.h"
#include "stream/fleet_report.h"
#include "tests/fuzz/fuzz_support.h"
#include "util/fs.h"

namespace st = storemove::stream;

namespace {

void Write(const std::string& path, std::string_view text) {
  storemove::UniqueFd fd(storemove::OpenFile(path, O_WRONLY | O_CREAT | O_TRUNC, 0644));
  storemove::WriteAll(fd.get(), text.data(), text.size(), path);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (64 << 10)) return -1;
  std::string_view input(reinterpret_cast<const char*>(data), size);
  size_t nul1 = input.find('\0');
  size_t nul2 = nul1 == std::string_view::npos ? nul1 : input.find('\0', nul1 + 1);
  std::string_view fleet_text = input.substr(0, nul1);
  std::string conf = nul1 == std::string_view::npos ? "" : std::string(input.substr(nul1 + 1, nul2 == std::string_view::npos ? nul2 : nul2 - nul1 - 1));
  bool has_plan = nul2 != std::string_view::npos;
  std::string_view plan_text = has_plan ? input.substr(nul2 + 1) : std::string_view();

  const std::string scratch = storemove::fuzz::ScratchDir();
  const std::string fleet_path = scratch + "/fleet.json";
  const std::string results = scratch + "/results";
  std::filesystem::remove_all(results);
  Write(fleet_path, fleet_text);

  storemove::fuzz::OnlyStoremoveErrors("fleet: groups", [&] {
    std::vector<std::string> names = st::GroupNamesOf(conf, "backup-groups.conf");
    std::set<std::string> distinct(names.begin(), names.end());
    FUZZ_CHECK(distinct.size() == names.size());
  });

  st::Fleet fleet;
  if (!storemove::fuzz::OnlyStoremoveErrors("fleet: read", [&] { fleet = st::ReadFleet(fleet_path); })) return 0;
  FUZZ_CHECK(!fleet.sources.empty());
  for (const st::FleetSource& s : fleet.sources) {
    FUZZ_CHECK(!s.host.empty() && !s.store.empty() && s.store[0] == '/' && !s.key.empty() && s.key[0] == '/');
    FUZZ_CHECK(s.jobs >= 1 && s.jobs <= 64);
    FUZZ_CHECK(!s.storemove.empty());
    FUZZ_CHECK(s.to.rfind(':') != std::string::npos && s.to.rfind(':') > 0);
  }

  if (has_plan) {
    std::filesystem::create_directory(results);
    Write(results + "/" + st::kPlannedReportsFile, plan_text);
  }
  st::PlanOptions options;
  options.results_dir = results;
  options.read_groups_conf = [&](const st::FleetSource&) { return conf; };
  if (size % 2 == 1) options.deadline_epoch = int64_t(size) * 1000;
  std::vector<st::PlannedJob> jobs;
  bool planned = storemove::fuzz::OnlyStoremoveErrors("fleet: plan", [&] { jobs = st::PlanFleet(fleet, options); });
  if (planned) {
    FUZZ_CHECK(!jobs.empty());
    std::string plan = storemove::ReadFile(results + "/" + st::kPlannedReportsFile);
    FUZZ_CHECK(plan.starts_with(std::string(st::kPlannedReportsMagic) + "\n"));
    for (const st::PlannedJob& job : jobs) {
      FUZZ_CHECK(job.source < fleet.sources.size());
      if (job.command.find('\n') != std::string::npos || job.command.find('\r') != std::string::npos) {
        std::fprintf(stderr, "fleet: a planned job is not one line: [%s]\n", job.command.c_str());
        std::abort();
      }
      FUZZ_CHECK(job.report.starts_with(results + "/") && job.report.ends_with(".json"));
      FUZZ_CHECK(job.report.find('/', results.size() + 1) == std::string::npos);
      FUZZ_CHECK(plan.find("\n" + job.report.substr(results.size() + 1) + "\n") != std::string::npos);
    }
    // `storemove report` reads the plan back: nothing is there yet, so every job's report is missing.
    st::FleetReport report;
    FUZZ_CHECK(storemove::fuzz::OnlyStoremoveErrors("fleet: report of the plan",
                                                    [&] { report = st::MergeFleetReports(results); }));
    std::set<std::string> reports;
    for (const st::PlannedJob& job : jobs) reports.insert(job.report);
    FUZZ_CHECK(report.missing.size() >= reports.size());
    FUZZ_CHECK(!report.ok());
  }
  std::filesystem::remove_all(results);
  return 0;
}
