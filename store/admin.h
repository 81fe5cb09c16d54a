// Administrative operations on whole mailboxes and users, as Sun's `mboxutil -d` and `-r` do:
// deletion, rename, moving a user to another partition, and the record of a verified copy that
// guards the deletion of a user (docs/store-format.md §3.5, §6.7, §6.8).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "store/store.h"
#include "util/digest.h"

namespace storemove::store {

// A name given to delete or rename: "joe" and "user/joe" mean the user with all its mailboxes,
// "user/joe/Sent" one mailbox. Throws kInvalidArgument for anything else ("../x", "user/../x").
struct AdminTarget {
  std::string user;
  std::string folder;  // empty: the whole user
  bool whole_user() const { return folder.empty(); }
};
AdminTarget ParseAdminTarget(std::string_view name);

// --- verification record (verified.db) ------------------------------------------------------

// A digest of everything a copy must reproduce: every folder's name, UIDVALIDITY, UIDNEXT,
// count, bytes and user-flag names, and every message's UID, flags, size and digest
// (docs/store-format.md §3.5 gives the exact byte sequence). Any delivery, expunge or flag
// change alters it.
struct UserFingerprint {
  Digest digest;
  uint32_t folders = 0;
  uint64_t messages = 0;
  uint64_t bytes = 0;
  friend bool operator==(const UserFingerprint&, const UserFingerprint&) = default;
};
UserFingerprint FingerprintUser(Store& store, std::string_view user);
// Its fixed encoding, as verified.db keeps it: digest, folders, messages, bytes (little-endian).
constexpr size_t kFingerprintSize = 16 + 4 + 8 + 8;
void AppendFingerprint(std::string* out, const UserFingerprint& f);
UserFingerprint ReadFingerprint(const uint8_t* p);  // kFingerprintSize bytes at p

struct VerifiedInfo {
  std::string destination;  // free text: "host:port", a store path, ...
  int64_t verified_at = 0;  // unix seconds
  UserFingerprint fingerprint;
};

// Records that the user's current state was verified at `destination`. The caller must know
// nothing changed since its comparison (e.g. the user is on hold); otherwise use the overload.
void RecordVerified(Store& store, std::string_view user, std::string_view destination);
// Same, with the fingerprint taken before the comparison began: throws kTempFail (and records
// nothing) when the user changed meanwhile, since the comparison may then have missed it.
void RecordVerified(Store& store, std::string_view user, std::string_view destination,
                    const UserFingerprint& before_comparison);
std::optional<VerifiedInfo> GetVerified(Store& store, std::string_view user);
// Removes the user's record, durably, after a verify found some of its mail not proven at a
// destination: `delete` refuses the user again until a verify finds it equal (helper-169: a
// verify that failed after an equal one left delete free to remove the only copy). Returns
// whether there was one.
bool ForgetVerified(Store& store, std::string_view user);
bool VerifiedAndUnchanged(Store& store, std::string_view user);
// Throws kTempFail naming the reason ("not verified", "changed since it was verified at X on T").
void RequireVerifiedAndUnchanged(Store& store, std::string_view user);

// --- deletion ---------------------------------------------------------------------------------

// Deletes one mailbox: its folder.db record, lright.db entries and peruser.db data go in one
// transaction (the commit point, which also lowers the quota), then its files. Sub-folders stay.
// The INBOX cannot be deleted on its own (kInvalidArgument): delete the user instead.
// Returns the mailbox name deleted ("user/joe/Sent"). `held`: the caller's own write lock of
// `user` (a restore replacing a folder it is writing), used instead of taking it again.
std::string DeleteFolder(Store& store, std::string_view user, std::string_view folder,
                         const Store::UserWriteLock* held = nullptr);

struct DeleteUserOptions {
  bool force = false;  // skip the verified-and-unchanged guard
  // Tests: called once the status is set for the deletion, before any folder is touched (a
  // kill -9 there leaves the user with that status).
  std::function<void()> before_folders = nullptr;
  // Tests: called after the status is read, before the deletion's hold is set.
  std::function<void()> before_hold = nullptr;
};
// Deletes a user: every mailbox, subscription, quota, verification and user record in one
// transaction, the user's identifier from other mailboxes' ACLs, then the files. Refused
// (kTempFail, nothing changed) unless the user was verified and is unchanged, or `force`.
// Returns the mailbox names deleted, children first.
std::vector<std::string> DeleteUser(Store& store, std::string_view user, DeleteUserOptions options = {});

// A deletion killed after its commit leaves the files of what it deleted, and its rerun finds no
// record (§6.7). For a user without a record (`folder` empty) or a mailbox without one: removes
// those files, under the user's write lock. Returns the folder directories that held files (0:
// nothing was left, or it is recorded).
size_t RemoveLeftoversOfDeleted(Store& store, std::string_view user, std::string_view folder);

// --- rename and partition moves ---------------------------------------------------------------

struct Renamed {
  std::string from;  // mailbox names
  std::string to;
};

// Renames a folder and its children (Old/x -> New/x) within a user. Refuses INBOX, an existing
// target, and a target inside the folder itself. Returns the mailboxes renamed, in name order.
std::vector<Renamed> RenameFolder(Store& store, std::string_view user, std::string_view old_folder,
                                  std::string_view new_folder);
// Renames a user with all folders, subscriptions, quota and status; the verification record is
// dropped (it described the old name). `partition` (optional) moves the user at the same time.
std::vector<Renamed> RenameUser(Store& store, std::string_view old_user, std::string_view new_user,
                                std::string_view partition = {});
// Moves all of a user's folders to `partition`; false when the user is there already.
bool MoveUser(Store& store, std::string_view user, std::string_view partition);

}  // namespace storemove::store
