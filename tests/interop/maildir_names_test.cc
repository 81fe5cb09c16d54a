// Maildir++ names read back (interop/maildir_names.h): the exact inverse of what the export
// writes (interop/export.h), and what a hostile directory name turns into.
#include <gtest/gtest.h>

#include "tests/support/error_code.h"
#include "interop/export.h"
#include "interop/maildir_names.h"
#include "store/store.h"
#include "util/error.h"

namespace storemove::interop {
namespace {

using store::kAnswered;
using store::kDeleted;
using store::kDraft;
using store::kFlagged;
using store::kSeen;

using storemove::testing::CodeOf;

TEST(MaildirNames, FolderNamesAreTheInverseOfTheExportsDirectoryNames) {
  for (const std::string folder :
       {"Sent", "INBOX/Sub", "Projects/2024", "Archive/2023/Q1", "a.b", "a.b/c.d", "back\\slash", "~tilde",
        "~x/~y", "x~", "a&b", "&", "&-", "Entwürfe", "日本語/台北", "台北/日本語", "\xF0\x9F\x98\x80 smile",
        "caf\xe9", "\xed\xa0\x80", "a\\2eb", "100%", "sp ace", "dot.", ".lead/trail."}) {
    const std::string dir = MaildirFolderDir(folder);
    ASSERT_TRUE(dir.starts_with(".")) << dir;
    EXPECT_EQ(MaildirFolderName(std::string_view(dir).substr(1)), folder) << dir;
  }
}

// Lines as Dovecot 2.3.19 wrote them (listescape, mailbox_list_utf8 = no) for IMAP SUBSCRIBE of
// "Projects/2024", "a.b", "Entwürfe", "back\slash" and INBOX; and every name the export writes.
TEST(MaildirNames, SubscriptionLinesAreDovecotsBothWays) {
  const std::vector<std::pair<std::string, std::string>> dovecot = {
      {"Projects/2024", "Projects\t2024"}, {"a.b", "a\\2eb"}, {"Entwürfe", "Entw&APw-rfe"},
      {"back\\slash", "back\\5cslash"}, {"INBOX", "INBOX"}};
  for (const auto& [folder, line] : dovecot) {
    EXPECT_EQ(MaildirSubscriptionLine(folder), line);
    EXPECT_EQ(MaildirSubscribedFolder(line, 2), folder);
  }
  for (const std::string folder : {"Sent", "INBOX/Sub", "Archive/2023/Q1", "~tilde", "日本語/台北", "a&b", "dot.",
                                   ".lead/trail.", "tab\there", "\x01one"}) {
    const std::string line = MaildirSubscriptionLine(folder);
    EXPECT_EQ(line.find_first_of("\n\r"), std::string::npos) << line;
    EXPECT_EQ(MaildirSubscribedFolder(line, 2), folder) << line;
  }
  EXPECT_EQ(MaildirSubscriptionLine("tab\there"), "tab&AAk-here");  // modified UTF-7 encodes control characters
  // Version 1 holds the Maildir++ name; a trailing separator (older writers) is ignored.
  EXPECT_EQ(MaildirSubscribedFolder("Projects.2024", 1), "Projects/2024");
  EXPECT_EQ(MaildirSubscribedFolder("Projects.", 1), "Projects");
  EXPECT_EQ(MaildirSubscribedFolder("Projects\t2024\t", 2), "Projects/2024");
  EXPECT_EQ(CodeOf([] { MaildirSubscribedFolder("a\t&AC8-b", 2); }), Errc::kInvalidArgument);
  EXPECT_EQ(CodeOf([] { MaildirSubscribedFolder("a\001tb", 2); }), Errc::kInvalidArgument);
}

TEST(MaildirNames, DovecotNamesDecode) {
  EXPECT_EQ(MaildirFolderName("Projects.2024"), "Projects/2024");
  EXPECT_EQ(MaildirFolderName("a\\2eb.c"), "a.b/c");
  EXPECT_EQ(MaildirFolderName("a\\2Eb"), "a.b");  // either case of hex digit
  EXPECT_EQ(MaildirFolderName("\\7etilde"), "~tilde");
  EXPECT_EQ(MaildirFolderName("back\\5cslash"), "back\\slash");
  EXPECT_EQ(MaildirFolderName("lone\\x"), "lone\\x");  // not an escape: kept as it is
  EXPECT_EQ(MaildirFolderName("end\\"), "end\\");
  EXPECT_EQ(MaildirFolderName("Entw&APw-rfe"), "Entwürfe");
  EXPECT_EQ(MaildirFolderName("&U,BTFw-.&ZeVnLIqe-"), "台北/日本語");
  // What the store must refuse is left to store::ValidateFolderName.
  EXPECT_EQ(MaildirFolderName("\\2e\\2e.x"), "../x");
  EXPECT_EQ(CodeOf([] { store::ValidateFolderName(MaildirFolderName("\\2e\\2e.x")); }), Errc::kInvalidArgument);
  EXPECT_EQ(MaildirFolderName(".x"), "/x");
  EXPECT_EQ(CodeOf([] { store::ValidateFolderName(MaildirFolderName(".x")); }), Errc::kInvalidArgument);
}

TEST(MaildirNames, HostileNamesAreRefused) {
  EXPECT_EQ(CodeOf([] { MaildirFolderName("a\\2fb"); }), Errc::kInvalidArgument);  // a '/' inside a component
  EXPECT_EQ(CodeOf([] { MaildirFolderName("&Jjo"); }), Errc::kInvalidArgument);   // unterminated
  EXPECT_EQ(CodeOf([] { MaildirFolderName("a&AC8-b"); }), Errc::kInvalidArgument);  // a '/' in base64
  EXPECT_EQ(CodeOf([] { MaildirFolderName("&2D3-"); }), Errc::kInvalidArgument);  // a lone surrogate
  EXPECT_EQ(CodeOf([] { MaildirFolderName("&*-"); }), Errc::kInvalidArgument);
  EXPECT_EQ(CodeOf([] { MaildirFolderName("caf\xc3\xa9"); }), Errc::kInvalidArgument);  // raw 8-bit
}

TEST(MaildirNames, FileNamesSplitIntoBaseAndFlagLetters) {
  MaildirFileName n = SplitMaildirFileName("1700000000.M1P2.host,S=120,W=124:2,FSa");
  EXPECT_EQ(n.base, "1700000000.M1P2.host,S=120,W=124");
  EXPECT_EQ(n.letters, "FSa");
  n = SplitMaildirFileName("1700000000.M1P2.host");
  EXPECT_EQ(n.base, "1700000000.M1P2.host");
  EXPECT_EQ(n.letters, "");
  n = SplitMaildirFileName("1.x:1,experimental");
  EXPECT_EQ(n.base, "1.x");
  EXPECT_EQ(n.letters, "");
  EXPECT_EQ(MaildirSizeHint("1.x,S=120,W=124"), std::optional<uint64_t>(120));
  EXPECT_EQ(MaildirSizeHint("1.x,W=124,S=7"), std::optional<uint64_t>(7));
  EXPECT_EQ(MaildirSizeHint("1.x"), std::nullopt);
  EXPECT_EQ(MaildirSizeHint("1.x,S=12a"), std::nullopt);
}

TEST(MaildirNames, FlagLettersAreTheInverseOfTheExports) {
  for (uint8_t flags = 0; flags < 32; ++flags) {
    const uint8_t system = (flags & 1 ? kDraft : 0) | (flags & 2 ? kFlagged : 0) | (flags & 4 ? kAnswered : 0) |
                           (flags & 8 ? kSeen : 0) | (flags & 16 ? kDeleted : 0);
    for (uint32_t keywords : {0u, 1u, 0b101u, 1u << 25, (1u << 26) - 1}) {
      for (const bool passed : {false, true}) {
        const MaildirFlags parsed = ParseMaildirFlagLetters(MaildirFlagLetters(system, passed, keywords));
        EXPECT_EQ(parsed.flags, system);
        EXPECT_EQ(parsed.passed, passed);
        EXPECT_EQ(parsed.keyword_bits, keywords);
        EXPECT_EQ(parsed.unknown, 0u);
      }
    }
  }
  const MaildirFlags other = ParseMaildirFlagLetters("PS1X");
  EXPECT_EQ(other.flags, kSeen);
  EXPECT_TRUE(other.passed);  // mutt's, mbsync's and offlineimap's $Forwarded
  EXPECT_EQ(other.unknown, 2u);
}

}  // namespace
}  // namespace storemove::interop
