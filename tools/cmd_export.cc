// storemove export: imsexport. Writes one user's folders as UNIX mbox files (default, imsexport's
// layout) or as a Maildir++ tree for Dovecot; interop/export.h describes both layouts.
#include <cstdio>

#include "interop/export.h"
#include "tools/commands.h"
#include "util/error.h"
#include "util/plural.h"

namespace storemove::tools {
namespace {

struct ExportCliOptions {
  std::string store_dir;
  interop::ExportOptions export_options;
  std::string format = "mbox";
};

int RunExport(ExportCliOptions& options) {
  options.export_options.format = options.format == "maildir" ? interop::ExportFormat::kMaildir : interop::ExportFormat::kMbox;
  // A folder lock held for long (a rename staging it, a stopped writer) is said, not waited on in
  // silence (found by review, helper-52).
  auto store = OpenStore(options.store_dir);
  const interop::ExportReport report = interop::Export(*store, options.export_options);
  for (const interop::ExportedFolder& folder : report.folders) {
    const std::string path = folder.path.empty() ? "." : folder.path;
    std::printf("%-30s -> %s (%s, %s)%s\n", folder.folder.c_str(), path.c_str(),
                Counted(folder.messages, "message").c_str(), HumanBytes(folder.bytes).c_str(),
                folder.vanished == 0 ? ""
                                     : (", " + std::to_string(folder.vanished) + " expunged meanwhile").c_str());
  }
  std::printf("exported %s (%llu bytes) in %s of %s to %s\n", Counted(report.messages, "message").c_str(),
              static_cast<unsigned long long>(report.bytes), Counted(report.folders.size(), "folder").c_str(),
              options.export_options.user.c_str(), options.export_options.out_dir.c_str());
  if (report.flags_not_kept != 0 && options.export_options.format == interop::ExportFormat::kMbox) {
    // Not "lost": an import reads the messages' own fields back, which can say more flags than
    // the store held as well as fewer (helper-138).
    std::printf("%s whose flags their mbox copy does not say as stored: an export writes no flags into the messages, "
                "and an import reads back what their own Status: and X-Status: fields say, which may be more or "
                "fewer (--format maildir keeps flags)\n",
                Counted(report.flags_not_kept, "message").c_str());
  } else if (report.flags_not_kept != 0) {
    std::printf("%s lost flags Maildir cannot hold (Archived, or user flags beyond 26 or not IMAP atoms)\n",
                Counted(report.flags_not_kept, "message").c_str());
  }
  if (report.dates_not_kept != 0)
    std::printf("%s lost their internal date: a file time this filesystem cannot hold (outside its range, or "
                "finer than its resolution; an import reads another back)\n",
                Counted(report.dates_not_kept, "message").c_str());
  if (report.subscriptions != 0)
    std::printf("%s written to %s/subscriptions\n", Counted(report.subscriptions, "subscription").c_str(),
                options.export_options.out_dir.c_str());
  if (report.subscriptions_left_out != 0)
    std::printf("%s not written: mbox files hold none (--format maildir writes them)\n",
                Counted(report.subscriptions_left_out, "subscription").c_str());
  if (report.subscriptions_not_kept != 0)
    std::printf("%s to other users' folders not written (a Maildir++ tree holds the user's own)\n",
                Counted(report.subscriptions_not_kept, "subscription").c_str());
  return 0;
}

}  // namespace

void AddExportCommand(CLI::App& root, Action* chosen) {
  auto options = std::make_shared<ExportCliOptions>();
  CLI::App* command = root.add_subcommand(
      "export",
      "write a user's folders as UNIX mbox files (imsexport) or as a Maildir++ tree\n"
      "  mbox: OUTDIR/INBOX, OUTDIR/Sent ...; a folder with sub-folders is <name>.msg and its\n"
      "        sub-folders go into the directory <name>/ (mboxrd; envelope sender from Return-Path)\n"
      "  maildir: OUTDIR is the INBOX maildir, other folders are OUTDIR/.Sent, OUTDIR/.Projects.2024\n"
      "        (Dovecot's names: listescape '\\' escapes, modified UTF-7), with flags, keywords,\n"
      "        UIDs and UIDVALIDITY in dovecot-uidlist, the user's subscriptions in subscriptions\n"
      "  OUTDIR must not exist or be empty: export never merges into or overwrites earlier output;\n"
      "  an export killed or failed there is started over by running it again (its marker file\n"
      "  .storemove-export-unfinished stays until the export is complete and on disk).\n"
      "  OUTDIR may be a symbolic link to a directory; no link below it is followed.");
  AddStoreOption(command, &options->store_dir);
  command->add_option("-u,--user", options->export_options.user, "user id")->required()->type_name("USER");
  command->add_option("-d,--dir", options->export_options.out_dir, "output directory (absent or empty)")
      ->required()
      ->type_name("OUTDIR");
  command->add_option("--format", options->format, "mbox (default) or maildir")
      ->check(CLI::IsMember({"mbox", "maildir"}))
      ->type_name("FORMAT");
  command->add_option("--folder", options->export_options.folder_pattern,
                      "folders to export: '*' matches anything, '%' anything but '/' (default: *)")
      ->type_name("PATTERN");
  command->callback([options, chosen] { *chosen = [options] { return RunExport(*options); }; });
}

}  // namespace storemove::tools
