// storemove import: imsimport, one mbox file or many in one run (interop/import.h), or a Maildir++
// tree (interop/maildir_import.h). Like imsimport
// it bypasses the user's status and quota (an administrator is loading mail, not an MTA
// delivering it).
#include <algorithm>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <strings.h>
#include <cstdlib>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "interop/import.h"
#include "interop/maildir_import.h"
#include "interop/mbox_tree.h"
#include "interop/modified_utf7.h"
#include "relinker/arrival.h"
#include "store/sync.h"
#include "tools/commands.h"
#include "util/error.h"
#include "util/interrupt.h"
#include "util/plural.h"
#include "util/printable.h"

namespace storemove::tools {
namespace {

struct ImportCliOptions {
  std::string store_dir;
  std::string user;
  std::string mbox_path;
  std::vector<std::string> files;
  std::string folder;
  std::string list;
  std::string maildir;
  std::string mbox_tree;
  bool mboxo = false;
  bool mboxcl2 = false;
  bool append_all = false;
  bool utf7_names = false;  // file names spell folders in modified UTF-7 (Dovecot's, UW-IMAP's mbox trees)
  int timeout = 0;  // seconds without input from a pipe before giving up; 0 = wait
};

// What an import committed is complete and a rerun adds only what is missing (interop/import.h),
// so Ctrl-C or SIGTERM stops it at once, with one line that says so.
void OnInterrupt(int) {
  static const char kLine[] =
      "storemove: import interrupted: a new folder appears only once complete; an existing folder keeps the "
      "batches already added: run the same import again to complete it (it skips what is there)\n";
  (void)!::write(STDERR_FILENO, kLine, sizeof kLine - 1);
  ::_exit(ExitStatus(Errc::kInterrupted));
}

interop::MboxFileNames FileNames(const ImportCliOptions& o) {
  return o.utf7_names ? interop::MboxFileNames::kModifiedUtf7 : interop::MboxFileNames::kAsStored;
}

std::vector<interop::ImportJob> Jobs(const ImportCliOptions& o) {
  const interop::MboxFileNames names = FileNames(o);
  if (o.utf7_names && ((o.mbox_tree.empty() && o.files.empty()) || !o.list.empty() || !o.mbox_path.empty() ||
                       !o.folder.empty()))
    Throw(Errc::kInvalidArgument, "--utf7-names decodes folder names from file names (--mbox-tree DIR, or FILE...): "
                                  "not with -s, -d or --list, which name the folders themselves");
  if (!o.mbox_tree.empty()) {
    if (!o.list.empty() || !o.mbox_path.empty() || !o.files.empty() || !o.folder.empty())
      Throw(Errc::kInvalidArgument, "--mbox-tree imports the whole tree into the user's folders: no --list, -s, -d "
                                    "or FILE with it");
    if (o.user.empty()) Throw(Errc::kInvalidArgument, "import --mbox-tree needs -u USER");
    return interop::MboxTreeJobs(o.user, o.mbox_tree, names);
  }
  if (!o.list.empty()) {
    if (!o.user.empty() || !o.mbox_path.empty() || !o.files.empty() || !o.folder.empty())
      Throw(Errc::kInvalidArgument, "--list names users, folders and files itself: no -u, -s, -d or FILE with it");
    std::vector<interop::ImportJob> jobs = interop::ReadImportList(o.list);
    if (std::count_if(jobs.begin(), jobs.end(), [](const interop::ImportJob& j) { return interop::IsStandardInput(j.path); }) > 1)
      Throw(Errc::kInvalidArgument, o.list + ": standard input (/dev/stdin, /dev/fd/0) is named on more than one line; it can be read once");
    return jobs;
  }
  if (o.user.empty()) Throw(Errc::kInvalidArgument, "import needs -u USER (or --list FILE)");
  std::vector<std::string> paths = o.files;
  if (!o.mbox_path.empty()) paths.insert(paths.begin(), o.mbox_path);
  if (paths.empty()) Throw(Errc::kInvalidArgument, "import needs an mbox file: -s FILE or FILE...");
  std::vector<interop::ImportJob> jobs;
  std::map<std::string, std::string> file_of_folder;  // FILE...: a folder each
  // Standard input once, and into a folder named for it (helper-128: `- /dev/stdin` made a folder
  // "-" of the messages and an empty folder "stdin", exit 0).
  if (std::count_if(paths.begin(), paths.end(), interop::IsStandardInput) > 1)
    Throw(Errc::kInvalidArgument, "import: standard input (-, /dev/stdin, /dev/fd/0) is named more than once; it can be read once");
  for (const std::string& path : paths) {
    if (interop::IsStandardInput(path) && o.folder.empty() && !o.files.empty())
      Throw(Errc::kInvalidArgument, "import: " + path + " (standard input) has no name to give a folder: give -d FOLDER, "
                                    "or -s " + path + " for INBOX");
    // -s alone keeps imsimport's default, INBOX; FILE arguments go to their base names.
    std::string folder = !o.folder.empty() ? o.folder
                         : o.files.empty() ? "INBOX"
                                           : interop::FolderComponent(interop::FolderForFile(path), names, path);
    if (::strcasecmp(folder.c_str(), "INBOX") == 0) folder = "INBOX";  // as stored, and said so
    // Two files whose names give one folder (x and x.mbox, d1/Sent and d2/Sent: an export of
    // folders `x` and `x.mbox`) were merged into it, exit 0 (helper-103). -d says that is meant.
    if (o.folder.empty() && !o.files.empty()) {
      auto [it, fresh] = file_of_folder.emplace(folder, path);
      if (!fresh)
        Throw(Errc::kInvalidArgument, "import: " + it->second + " and " + path + " would both go into folder " + folder +
                                          " (a FILE goes into the folder of its base name less .mbox); to merge them "
                                          "give -d " + folder + ", else import each with its own -d or use --list");
    }
    jobs.push_back({o.user, folder, path, ""});
  }
  return jobs;
}

// Test seam (tests/tools/import_test.cc, maildir_import_test.cc): after a batch (mbox: of an
// existing folder; maildir: of any folder), say so on this descriptor and wait for a byte back, so
// a test can kill the import right there.
std::function<void()> TestBatchHook() {
  const char* hook = std::getenv("STOREMOVE_TEST_BATCH_FD");
  if (hook == nullptr) return {};
  const int fd = std::atoi(hook);
  return [fd] {
    char c = 'b';
    if (::write(fd, &c, 1) == 1) (void)!::read(fd, &c, 1);
  };
}

// Empty messages are stored as the source holds them (deliver refuses one: an empty stdin is a
// broken MTA pipe, an empty message in an mbox is really there), but never silently.
void PrintEmpty(uint64_t empty) {
  if (empty) std::printf(", %llu of them empty (0 bytes)", static_cast<unsigned long long>(empty));
}

// What single instance on arrival did (local.store.relinker.enabled), when it is on.
void PrintArrival(const relinker::ArrivalLinker& linker) {
  if (linker.enabled()) std::printf("single instance on arrival: %s\n", linker.counters().ToString().c_str());
}

// A folder named from a file name like "Entw&APw-rfe" (a Dovecot or UW-IMAP mbox tree read
// without --utf7-names) is imported as named; said once, before anything is written, so the
// administrator can stop and run it again with --utf7-names.
void WarnOfUtf7Names(const std::vector<interop::ImportJob>& jobs) {
  for (const interop::ImportJob& job : jobs) {
    const std::optional<std::string> decoded = interop::TryDecodeModifiedUtf7(job.folder);
    if (!decoded || *decoded == job.folder ||
        std::none_of(decoded->begin(), decoded->end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; }))
      continue;
    std::fprintf(stderr,
                 "storemove import: warning: folder names such as '%s' look like IMAP's modified UTF-7 (Dovecot's and "
                 "UW-IMAP's mbox files): they are imported as named; give --utf7-names to decode them ('%s')\n",
                 EscapeControls(job.folder).c_str(), EscapeControls(*decoded).c_str());
    return;
  }
}

void OnWait(const std::string& why) { std::fprintf(stderr, "storemove import: %s\n", why.c_str()); }

int RunMaildirImport(const ImportCliOptions& o, const std::string& root) {
  // A Maildir++ tree's names are modified UTF-7 always (interop/maildir_names.h): no --utf7-names.
  if (!o.list.empty() || !o.mbox_path.empty() || !o.files.empty() || !o.folder.empty() || o.mboxo || o.mboxcl2 ||
      !o.mbox_tree.empty() || o.utf7_names)
    Throw(Errc::kInvalidArgument, "--maildir imports the whole tree into the user's folders: no --list, -s, -d, --mboxo, "
                                  "--mboxcl2, --mbox-tree, --utf7-names (its names are decoded always) or FILE with it");
  if (o.user.empty()) Throw(Errc::kInvalidArgument, "import --maildir needs -u USER");
  auto store = OpenStore(root, {store::Durability::kNone, {}});  // waits said on stderr
  store::StoreSync sync(*store);  // opened before the first write (store/sync.h)
  interop::MaildirImportOptions options;
  options.user = o.user;
  options.dir = o.maildir;
  options.append_all = o.append_all;
  relinker::ArrivalLinker linker(*store);  // the store's local.store.relinker.* settings
  options.before_commit = linker.Hook();
  if (std::function<void()> hook = TestBatchHook())
    options.after_batch = [hook](const std::string&, uint64_t) { hook(); };
  options.on_wait = OnWait;
  options.on_warning = [](const std::string& w) { std::fprintf(stderr, "storemove import: warning: %s\n", w.c_str()); };
  const std::string dir = o.maildir;
  options.on_folder = [&o, dir](const interop::ImportedMaildirFolder& f) {
    const std::string from = f.path.empty() ? dir : dir + "/" + f.path;
    std::printf("imported %s (%llu bytes) from %s into user/%s/%s", Counted(f.messages, "message").c_str(),
                static_cast<unsigned long long>(f.bytes), from.c_str(), o.user.c_str(), f.folder.c_str());
    PrintEmpty(f.empty);
    if (f.skipped) std::printf(", %llu already present", static_cast<unsigned long long>(f.skipped));
    // Without a dovecot-uidlist (mbsync, offlineimap) nothing ties a file to a stored message
    // but its bytes: their flags stay as stored, said rather than left stale in silence (helper-138).
    if (f.skipped && !f.flags_follow_tree) std::printf(" (flags left as stored: the folder was not made from this tree's dovecot-uidlist)");
    if (f.uids_kept) std::printf(", UIDVALIDITY and UIDs kept");
    if (f.flags_updated) std::printf(", %s with flags updated", Counted(f.flags_updated, "message").c_str());
    std::printf("\n");
  };
  interop::MaildirImportReport report = interop::ImportMaildir(*store, options);
  sync.Sync();
  std::printf("imported %s (%llu bytes, %llu already present) from %s of %s for user %s",
              Counted(report.messages, "message").c_str(), static_cast<unsigned long long>(report.bytes),
              static_cast<unsigned long long>(report.skipped), Counted(report.folders.size(), "folder").c_str(),
              o.maildir.c_str(), o.user.c_str());
  if (report.empty) std::printf("; %s (0 bytes)", Counted(report.empty, "empty message").c_str());
  if (report.folders_created) std::printf("; %s new", Counted(report.folders_created, "folder").c_str());
  if (report.new_uids) std::printf("; %s got new UIDs", Counted(report.new_uids, "message").c_str());
  if (report.flags_not_kept)
    std::printf("; %s lost a flag the store cannot keep", Counted(report.flags_not_kept, "message").c_str());
  if (report.subscribed) std::printf("; %s added", Counted(report.subscribed, "subscription").c_str());
  if (report.flags_updated) std::printf("; %s with flags updated", Counted(report.flags_updated, "message").c_str());
  std::printf("\n");
  PrintArrival(linker);
  return 0;
}

int RunImport(const ImportCliOptions& o) {
  OnStopSignals(OnInterrupt);
  const std::string& root = RequireStoreDir(o.store_dir);
  if (!o.maildir.empty()) return RunMaildirImport(o, root);
  const std::vector<interop::ImportJob> jobs = Jobs(o);
  if (!o.utf7_names && (!o.mbox_tree.empty() || (!o.files.empty() && o.folder.empty()))) WarnOfUtf7Names(jobs);
  // Dovecot keeps an mbox user's subscriptions in the tree: read (and checked) before any write.
  std::vector<std::string> subscriptions;
  if (!o.mbox_tree.empty()) {
    std::vector<std::string> warnings;
    subscriptions = interop::MboxTreeSubscriptions(o.mbox_tree, FileNames(o), &warnings);
    for (const std::string& warning : warnings) std::fprintf(stderr, "storemove import: warning: %s\n", warning.c_str());
  }

  // No fsync per file: one syncfs of the store's filesystems before success (interop/import.h).
  auto store = OpenStore(root, {store::Durability::kNone, {}});  // waits said on stderr
  store::StoreSync sync(*store);  // opened before the first write (store/sync.h)
  interop::ImportOptions options;
  if (o.mboxo && o.mboxcl2) Throw(Errc::kInvalidArgument, "import: --mboxo or --mboxcl2, not both");
  options.flavor = o.mboxo     ? interop::MboxFlavor::kMboxo
                   : o.mboxcl2 ? interop::MboxFlavor::kMboxcl2
                               : interop::MboxFlavor::kMboxrd;
  options.append_all = o.append_all;
  relinker::ArrivalLinker linker(*store);  // the store's local.store.relinker.* settings
  options.before_commit = linker.Hook();
  if (std::function<void()> hook = TestBatchHook())
    options.after_batch = [hook](const interop::ImportJob&, uint64_t) { hook(); };
  options.on_wait = OnWait;
  // As restore's: a stalled pipe is said after a minute (or half --timeout) and ends the
  // import at --timeout, while the user it is writing stays locked (helper-66).
  options.stall = PipeStallPolicy("import", o.timeout, "; the user being imported stays locked for writing meanwhile");
  options.on_file = [](const interop::ImportJob& job, const interop::ImportedFile& file) {
    std::printf("imported %s (%llu bytes) from %s into user/%s/%s", Counted(file.messages, "message").c_str(),
                static_cast<unsigned long long>(file.bytes), job.path.c_str(), job.user.c_str(), job.folder.c_str());
    PrintEmpty(file.empty);
    if (file.skipped) std::printf(", %llu already present", static_cast<unsigned long long>(file.skipped));
    if (file.folder_data) std::printf(", its folder-data message (X-IMAP, not mail) left out");
    if (file.keywords_dropped)
      std::printf(", %s dropped (not IMAP keywords, or past the folder's 64)",
                  Counted(file.keywords_dropped, "keyword").c_str());
    if (file.text_from_lines)
      std::printf(", %s beginning \"From \" without a date kept as message text",
                  Counted(file.text_from_lines, "line").c_str());
    std::printf("\n");
  };
  interop::ImportReport report = interop::ImportMboxes(*store, jobs, options);
  if (!subscriptions.empty()) {
    // After the messages, as import --maildir does: a subscribed folder exists when a client lists it.
    const std::string prefix = "user/" + o.user + "/";
    std::set<std::string> had;
    for (std::string& mailbox : store->Subscriptions(o.user)) had.insert(std::move(mailbox));
    size_t added = 0;
    for (const std::string& folder : subscriptions)
      if (!had.count(prefix + folder)) {
        store->Subscribe(o.user, prefix + folder);
        ++added;
      }
    std::printf("subscribed %s (%zu listed in %s/.subscriptions)\n", Counted(added, "folder").c_str(),
                subscriptions.size(), o.mbox_tree.c_str());
  }
  sync.Sync();
  if (jobs.size() > 1) {
    std::printf("imported %s (%llu bytes, %llu already present) from %s for %s",
                Counted(report.messages, "message").c_str(), static_cast<unsigned long long>(report.bytes),
                static_cast<unsigned long long>(report.skipped), Counted(report.files, "file").c_str(),
                Counted(report.users, "user").c_str());
    if (report.empty) std::printf("; %s (0 bytes)", Counted(report.empty, "empty message").c_str());
    if (report.keywords_dropped) std::printf("; %s dropped", Counted(report.keywords_dropped, "keyword").c_str());
    std::printf("\n");
  }
  PrintArrival(linker);
  return 0;
}

}  // namespace

void AddImportCommand(CLI::App& root, Action* chosen) {
  auto o = std::make_shared<ImportCliOptions>();
  CLI::App* command = root.add_subcommand(
      "import",
      "load UNIX mbox files or a Maildir++ tree into folders, creating users and folders when missing (imsimport)\n"
      "  -u USER -s FILE [-d FOLDER]   one file, into FOLDER (default INBOX)\n"
      "  -u USER FILE... [-d FOLDER]   each file into the folder of its base name less .mbox (or all into\n"
      "                                FOLDER); two files naming one folder are refused\n"
      "  --list LIST                   lines USER<TAB>FOLDER<TAB>MBOX_PATH (relative paths: from LIST's directory)\n"
      "  -u USER --mbox-tree DIR       export's mbox tree: DIR/Sent is Sent, NAME.msg beside NAME/ is NAME\n"
      "  --utf7-names                  with FILE... or --mbox-tree: file names are modified UTF-7, as Dovecot and\n"
      "                                UW-IMAP keep mbox folders (Entw&APw-rfe is Entwürfe)\n"
      "  -u USER --maildir DIR         a Maildir++ tree (Dovecot, Courier, export --format maildir): DIR is INBOX,\n"
      "                                .Sub.Folder or Sub/Folder/cur is Sub/Folder; flags, keywords, dates,\n"
      "                                subscriptions and (new folders) UIDs kept\n"
      "A new folder appears only once its file is complete; a message the folder already holds (same bytes)\n"
      "is skipped, so running an interrupted import again completes it without duplicates. Exit 0 = on disk.");
  AddStoreOption(command, &o->store_dir);
  command->add_option("-u,--user", o->user, "user id")->type_name("USER");
  command->add_option("-s,--source", o->mbox_path, "mbox file to load; - or /dev/stdin: standard input, as the shell opened it")->type_name("MBOXFILE");
  command->add_option("files", o->files, "mbox files to load")->type_name("FILE");
  // An empty value (a script's unset variable) was taken for no -d: INBOX, or each file's name,
  // exit 0 (helper-133).
  command->add_option("-d,-F,--folder", o->folder, "folder to load into (default: INBOX, or each FILE's base name)")
      ->type_name("FOLDER")
      ->check(CLI::Validator([](const std::string& value) { return value.empty() ? "an empty folder name" : ""; },
                             "", "non-empty"));
  command->add_option("--list", o->list, "file of USER<TAB>FOLDER<TAB>MBOX_PATH lines: many users in one run")
      ->type_name("LIST");
  command->add_option("--maildir", o->maildir, "Maildir++ tree to load into -u USER's folders")
      ->type_name("DIR");
  command->add_option("--mbox-tree", o->mbox_tree,
                      "a tree of mbox files (export's mbox output) to load into -u USER's folders: each file is the "
                      "folder of its path, NAME.msg beside a directory NAME/ is the folder NAME")
      ->type_name("DIR");
  command->add_flag("--utf7-names", o->utf7_names,
                    "with FILE... or --mbox-tree: the file names spell folder names in IMAP's modified UTF-7, as "
                    "Dovecot (by default) and UW-IMAP keep mbox folders: Entw&APw-rfe is the folder Entwürfe");
  command->add_flag("--append-all", o->append_all,
                    "append every message, even one the folder already holds (imsimport's way; a rerun duplicates)");
  command->add_flag("--mboxo", o->mboxo,
                    "read the file as mboxo instead of mboxrd (they differ in how quoted >From lines are read)");
  command->add_flag("--mboxcl2", o->mboxcl2,
                    "read the file as mboxcl2 (Sun's /var/mail, messages delimited by Content-Length): nothing is "
                    "quoted, so >From lines stay as they are");
  AddStallTimeoutOption(command, &o->timeout, "a pipe (-s /dev/stdin)");
  command->callback([o, chosen] { *chosen = [o] { return RunImport(*o); }; });
}

}  // namespace storemove::tools
