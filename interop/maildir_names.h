// Maildir++ names both ways: what `storemove export --format maildir` writes (interop/export.h)
// and `storemove import --maildir` reads back (interop/maildir_import.h), side by side so each
// rule and its inverse stay together. Dovecot's layout with the listescape plugin.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace storemove::interop {

// Keywords a file name can carry: the letters 'a'..'z'.
constexpr size_t kMaildirKeywords = 26;

// --- written by the export -------------------------------------------------------------------
// The Maildir++ directory of a folder: "" for INBOX, ".Projects.2024" for "Projects/2024".
// Dovecot's storage-name rules with listescape: inside a component '.' is `\2e` and '\' `\5c`,
// a leading '~' of the whole name `\7e`, bytes that are not UTF-8 `\xx`; then modified UTF-7.
std::string MaildirFolderDir(std::string_view folder);
// The info part after ":2," for system flags, P and keyword letters ("DFPRST" then "a".."z" order).
// `passed` is the keyword $Forwarded, which mutt, mbsync and offlineimap write as P.
std::string MaildirFlagLetters(uint8_t flags, bool passed, uint32_t keyword_bits);
// The keyword P stands for, and whether `name` is it (keywords match in any case).
constexpr std::string_view kPassedKeyword = "$Forwarded";
bool IsPassedKeyword(std::string_view name);

// --- subscriptions: Dovecot's `subscriptions` file, both ways -------------------------------
// Version 2 begins with this header; each line then names one folder by the components of its
// Maildir++ name (MaildirFolderDir without the leading '.', split at '.') joined by TAB, each
// component with \001, TAB, CR and LF written as \001 then '1', 't', 'r', 'n' (Dovecot's tab
// escaping). Version 1 (no header) has the Maildir++ name itself, '.'-separated. INBOX is "INBOX".
constexpr std::string_view kSubscriptionsVersion2 = "V\t2\n\n";
// The export's line for a folder (version 2, without the line end).
std::string MaildirSubscriptionLine(std::string_view folder);
// The folder a line of a file of `version` (1 or 2) names, as MaildirFolderName decodes it; a
// trailing separator is ignored. Throws kInvalidArgument like MaildirFolderName.
std::string MaildirSubscribedFolder(std::string_view line, int version);

// --- read by the import ----------------------------------------------------------------------
// The folder of a Maildir++ directory, given its name without the leading '.':
// "Projects.2024" -> "Projects/2024", "a\2eb" -> "a.b", "Entw&APw-rfe" -> "Entwürfe".
// Each '.'-separated component is decoded from modified UTF-7, then every `\xx` (two hex digits,
// either case) becomes that byte; a '\' not followed by two hex digits stays as it is. Throws
// kInvalidArgument on invalid modified UTF-7 or a component that would hold a '/'. The result is
// not validated as a store folder name (store::ValidateFolderName does that).
std::string MaildirFolderName(std::string_view dir_name);

// A message file name "<base>[:<info>]": the base (what dovecot-uidlist names) and, for
// "2,<letters>" info, the flag letters.
struct MaildirFileName {
  std::string_view base;
  std::string_view letters;  // empty without ":2," info
};
MaildirFileName SplitMaildirFileName(std::string_view name);

// Flag letters: D Draft, F Flagged, P Passed, R Answered, S Seen, T Deleted, 'a'..'z' keyword bits
// 0..25. Any other letter is counted in `unknown`.
struct MaildirFlags {
  uint8_t flags = 0;  // store::SystemFlag bits
  bool passed = false;  // P: forwarded, bounced or resent (kPassedKeyword)
  uint32_t keyword_bits = 0;
  uint32_t unknown = 0;
};
MaildirFlags ParseMaildirFlagLetters(std::string_view letters);

// The size a base name states (",S=<bytes>"), if any: a hint written by the delivering server.
std::optional<uint64_t> MaildirSizeHint(std::string_view base);

}  // namespace storemove::interop
