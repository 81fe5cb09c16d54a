// The storemove CLI's subcommands. Each lives in its own cmd_<name>.cc and registers itself on
// the root app with an Add<Name>Command function listed in main.cc. Registration only records
// what to run; the chosen action runs after parsing, inside main's one error handler.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "store/store.h"
#include "util/input_wait.h"

namespace storemove::tools {

// What the chosen subcommand does once the command line is parsed; returns the exit status.
using Action = std::function<int()>;

// Each adds one subcommand to `root`; when the user picks it, its action is stored in *chosen.
void AddInitCommand(CLI::App& root, Action* chosen);
void AddDeliverCommand(CLI::App& root, Action* chosen);
void AddImportCommand(CLI::App& root, Action* chosen);
void AddExportCommand(CLI::App& root, Action* chosen);
void AddListCommand(CLI::App& root, Action* chosen);
void AddUserCommand(CLI::App& root, Action* chosen);
void AddUsersCommand(CLI::App& root, Action* chosen);
void AddGroupsCommand(CLI::App& root, Action* chosen);
void AddGenCommand(CLI::App& root, Action* chosen);
void AddBackupCommand(CLI::App& root, Action* chosen);
void AddRestoreCommand(CLI::App& root, Action* chosen);
void AddServeCommand(CLI::App& root, Action* chosen);
void AddKeygenCommand(CLI::App& root, Action* chosen);
void AddRelinkCommand(CLI::App& root, Action* chosen);
void AddVerifyCommand(CLI::App& root, Action* chosen);
void AddMigrateCommand(CLI::App& root, Action* chosen);
void AddDeleteCommand(CLI::App& root, Action* chosen);
void AddRenameCommand(CLI::App& root, Action* chosen);
void AddMoveUserCommand(CLI::App& root, Action* chosen);
void AddConfigCommand(CLI::App& root, Action* chosen);
void AddPlanCommand(CLI::App& root, Action* chosen);
void AddReportCommand(CLI::App& root, Action* chosen);

// --- helpers shared by the subcommands (common.cc) -------------------------------------------

// Adds `--store DIR` (default: environment variable STOREMOVE_STORE) to a subcommand.
void AddStoreOption(CLI::App* command, std::string* store_dir);
// The store directory, or kInvalidArgument naming both ways to give it when it is missing.
const std::string& RequireStoreDir(const std::string& store_dir);
// Opens the store named by --store (kNotFound when there is none).
std::unique_ptr<store::Store> OpenStore(const std::string& store_dir, store::StoreOptions options = {});

// What restore and import do when their input pipe stalls (util/input_wait.h): say so on stderr
// as "storemove COMMAND: ..." after a minute (or half `timeout`), and give up at `timeout` (0:
// never); `holding` says what they hold meanwhile.
StallPolicy PipeStallPolicy(const char* command, int timeout, std::string holding);
// The longest wait an option of seconds takes (restore/import --timeout, deliver --lock-wait): a week.
constexpr int kMaxWaitSeconds = 7 * 86400;
// Adds `--timeout SECONDS` without input from a pipe before giving up (0 = wait) to restore or import.
void AddStallTimeoutOption(CLI::App* command, int* timeout, const std::string& input);

// Unix seconds as ISO 8601 UTC ("2024-07-01T10:00:00Z"); "-" for 0 (never).
std::string IsoTime(int64_t unix_seconds);
// Unix seconds from either a decimal number or an RFC 5322 date ("Tue, 1 Jul 2024 10:00:00 +0200");
// kInvalidArgument naming `what` when it is neither, or when it is not after 1970-01-01T00:00:00Z
// (0 is a message's "no date", which the store replaces with now) or is after
// 9999-12-31T23:59:59Z (an mbox "From " line cannot carry a year of five digits).
int64_t ParseTime(std::string_view text, std::string_view what);
// A byte count: decimal, optionally with a binary suffix K, M, G or T ("512M").
uint64_t ParseByteCount(std::string_view text, std::string_view what);
// "1.5 MiB" style, for humans.
std::string HumanBytes(uint64_t bytes);
int64_t UnixNow();

}  // namespace storemove::tools
