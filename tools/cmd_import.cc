// storemove import: imsimport. Loads a UNIX mbox file into a folder, creating the user and the
// folder when missing. Like imsimport it bypasses the user's status and quota (an administrator
// is loading mail, not an MTA delivering it).
#include <fcntl.h>

#include <cstdio>
#include <vector>

#include "store/mbox.h"
#include "tools/commands.h"
#include "util/error.h"

namespace storemove::tools {
namespace {

// Messages become visible in batches: one lock, one store.idx append and one quota update per batch.
constexpr size_t kBatchMessages = 256;
constexpr uint64_t kBatchBytes = 8 << 20;

struct ImportOptions {
  std::string store_dir;
  std::string user;
  std::string mbox_path;
  std::string folder = "INBOX";
  bool mboxo = false;
};

int RunImport(const ImportOptions& options) {
  const std::string& root = RequireStoreDir(options.store_dir);
  store::ValidateUserId(options.user);
  store::ValidateFolderName(options.folder);
  UniqueFd mbox = OpenFile(options.mbox_path, O_RDONLY);

  auto store = store::Store::Open(root, {store::Durability::kBatch});
  store::MboxReader reader(mbox.get(), options.mbox_path,
                           options.mboxo ? store::MboxFlavor::kMboxo : store::MboxFlavor::kMboxrd);
  // A file that is not an mbox fails here, before the user or folder is created.
  store::MboxMessage message;
  bool have_message = reader.Next(&message);
  if (!store->FindUser(options.user)) store->CreateUser(options.user);  // with its INBOX
  std::unique_ptr<store::Folder> folder = store->CreateFolder(options.user, options.folder);

  const int64_t now = UnixNow();
  uint64_t messages = 0;
  uint64_t bytes = 0;
  std::vector<store::StagedMessage> batch;
  uint64_t batch_bytes = 0;
  try {
    for (; have_message; have_message = reader.Next(&message)) {
      std::unique_ptr<store::MessageWriter> writer = folder->NewMessage();
      writer->Write(message.bytes);
      store::MessageMeta meta;
      meta.internal_date = message.envelope_date != 0 ? message.envelope_date : now;
      meta.save_time = now;
      batch.push_back(writer->Finish(meta));
      ++messages;
      bytes += message.bytes.size();
      batch_bytes += message.bytes.size();
      if (batch.size() >= kBatchMessages || batch_bytes >= kBatchBytes) {
        folder->Commit(batch);
        batch.clear();
        batch_bytes = 0;
      }
    }
    if (!batch.empty()) folder->Commit(batch);
  } catch (...) {
    folder->Discard(batch);
    throw;
  }
  std::printf("imported %llu messages (%llu bytes) from %s into %s\n", static_cast<unsigned long long>(messages),
              static_cast<unsigned long long>(bytes), options.mbox_path.c_str(), folder->Mailbox().c_str());
  return 0;
}

}  // namespace

void AddImportCommand(CLI::App& root, Action* chosen) {
  auto options = std::make_shared<ImportOptions>();
  CLI::App* command = root.add_subcommand(
      "import", "load a UNIX mbox file into a folder, creating the user and folder when missing (imsimport)");
  AddStoreOption(command, &options->store_dir);
  command->add_option("-u,--user", options->user, "user id")->required()->type_name("USER");
  command->add_option("-s,--source", options->mbox_path, "mbox file to load")->required()->type_name("MBOXFILE");
  command->add_option("-d,--folder", options->folder, "folder to load into (default: INBOX)")->type_name("FOLDER");
  command->add_flag("--mboxo", options->mboxo,
                    "read the file as mboxo instead of mboxrd (they differ in how quoted >From lines are read)");
  command->callback([options, chosen] { *chosen = [options] { return RunImport(*options); }; });
}

}  // namespace storemove::tools
