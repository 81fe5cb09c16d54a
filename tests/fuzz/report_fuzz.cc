// `storemove report` (stream/fleet_report.h) over a hostile results directory: the jobs' JSON
// reports and RESULTS/.plan are written by every job of a fleet (and whoever can write the
// directory), so they are untrusted input. The input is split at its NUL bytes: the first part
// is RESULTS/.plan (none when that part is empty), each further part a file j1.json, j2.json,
// ... (every fourth one j4.json.part, a partial report).
// Invariants: only storemove::Error escapes MergeFleetReports, with a one-line message; every
// file is either a whole report or named as broken, never skipped in silence; a report the plan
// names and that is there is not missing; Text() and Json() never throw, Json() is valid JSON
// whose "ok" is ok(), and no line of Text() is forged by a name or error from the files.
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "stream/fleet_plan.h"
#include "stream/fleet_report.h"
#include "tests/fuzz/fuzz_support.h"
#include "util/fs.h"

namespace st = storemove::stream;

namespace {

std::vector<std::string_view> SplitAtNul(std::string_view input) {
  std::vector<std::string_view> parts;
  for (size_t start = 0;;) {
    size_t nul = input.find('\0', start);
    parts.push_back(input.substr(start, nul == std::string_view::npos ? std::string_view::npos : nul - start));
    if (nul == std::string_view::npos) break;
    start = nul + 1;
  }
  return parts;
}

void Write(const std::string& path, std::string_view text) {
  storemove::UniqueFd fd(storemove::OpenFile(path, O_WRONLY | O_CREAT | O_TRUNC, 0644));
  storemove::WriteAll(fd.get(), text.data(), text.size(), path);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (256 << 10)) return -1;
  std::vector<std::string_view> parts = SplitAtNul(std::string_view(reinterpret_cast<const char*>(data), size));
  if (parts.size() > 17) return -1;  // a few files are enough; directories of thousands add nothing
  const std::string dir = storemove::fuzz::ScratchDir() + "/results";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directory(dir);
  if (!parts[0].empty()) Write(dir + "/" + st::kPlannedReportsFile, parts[0]);
  size_t files = 0;
  for (size_t i = 1; i < parts.size(); ++i, ++files)
    Write(dir + "/j" + std::to_string(i) + (i % 4 == 0 ? ".json.part" : ".json"), parts[i]);

  st::FleetReport report;
  bool merged = storemove::fuzz::OnlyStoremoveErrors("report", [&] { report = st::MergeFleetReports(dir + "/"); });
  std::filesystem::remove_all(dir);
  if (!merged) return 0;

  // A file that is not a whole report is named, never skipped in silence.
  FUZZ_CHECK(report.reports + report.broken.size() == files);
  FUZZ_CHECK(report.dir == dir);
  for (const st::FleetGroupResult& g : report.groups) FUZZ_CHECK(!g.file.empty());
  FUZZ_CHECK(report.groups_failed <= report.groups.size());
  if (report.ok()) FUZZ_CHECK(report.broken.empty() && report.missing.empty() && report.jobs_failed == 0);
  FUZZ_CHECK(report.hold_max >= report.hold_p95 || report.hold_p95 != report.hold_p95);

  std::string text, json;
  try {
    text = report.Text();
    json = report.Json();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "report: Text() or Json() threw: %s\n", e.what());
    std::abort();
  }
  // Every line of the text starts as the report writes its lines: nothing from the files starts one.
  size_t lines = 0;
  for (size_t pos = 0; pos < text.size(); ++lines) {
    size_t eol = text.find('\n', pos);
    FUZZ_CHECK(eol != std::string::npos);
    std::string_view line(text.data() + pos, eol - pos);
    static const char* kStarts[] = {"fleet ", "fleet: ", "moved: ", "not moved: ", "hold: ", "slowest groups:", "  ",
                                    "FAILED group ", "STOPPED group ", "FAILED job ", "BROKEN ", "MISSING ", "recovered ", "in no group: "};
    bool known = false;
    for (const char* s : kStarts) known = known || line.starts_with(s);
    if (!known) {
      std::fprintf(stderr, "report: a line of Text() that the report did not start: [%.*s]\n", int(line.size()), line.data());
      std::abort();
    }
    for (unsigned char c : line) FUZZ_CHECK(c >= 0x20 && c != 0x7f);
    pos = eol + 1;
  }
  FUZZ_CHECK(lines >= 4);
  nlohmann::json parsed;
  try {
    parsed = nlohmann::json::parse(json);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "report: Json() is not JSON: %s\n", e.what());
    std::abort();
  }
  FUZZ_CHECK(parsed.is_object() && parsed["ok"].is_boolean() && parsed["ok"].get<bool>() == report.ok());
  FUZZ_CHECK(parsed["reports"].get<uint64_t>() == report.reports);
  return 0;
}
