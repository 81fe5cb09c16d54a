// Keywords that come from outside (moveuser's IMAP FLAGS, an mbox's X-Keywords) become user-flag
// bits only when the store keeps them (interop/keyword_bits.h).
#include "interop/keyword_bits.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace storemove::interop {
namespace {

// A keyword that is no IMAP atom (Dovecot sends `qu"ote` or `odd%kw` raw when a sieve script or
// a file set it) became a user flag: the backup exited 0 and its restore refused the whole
// folder (helper-93). It finds no bit; the caller counts it as dropped.
TEST(KeywordBits, OnlyImapAtomsOfTheStoresLengthGetABit) {
  KeywordBits bits({"$Work"});
  EXPECT_EQ(bits.Bit("$Work"), 0u);
  EXPECT_EQ(bits.Bit("Later"), 1u);
  for (const std::string& name : std::vector<std::string>{"odd%kw", "qu\"ote", "star*", "br]ack", "back\\slash", "paren(x)", "{lit}", "sp ace",
                                 "\\Seen", "", "8bit\xe9", std::string(201, 'k')})
    EXPECT_FALSE(bits.Bit(name).has_value()) << name;
  EXPECT_EQ(bits.Bit(std::string(200, 'k')), 2u);
  EXPECT_EQ(bits.names().size(), 3u);
}

// IMAP servers take keywords in any case: `$forwarded` from one is the folder's `$Forwarded`,
// not a second flag beside it (helper-144 #3). The same spelling is found first.
TEST(KeywordBits, AKeywordInAnotherCaseIsTheFoldersFlag) {
  KeywordBits bits({"$Forwarded", "later", "Later"});
  EXPECT_EQ(bits.Bit("$forwarded"), 0u);
  EXPECT_EQ(bits.Bit("$FORWARDED"), 0u);
  EXPECT_EQ(bits.Bit("Later"), 2u);
  EXPECT_EQ(bits.Bit("LATER"), 1u);
  EXPECT_EQ(bits.Bit("$Junk"), 3u);
  EXPECT_EQ(bits.Bit("$junk"), 3u);
  EXPECT_EQ(bits.names(), (std::vector<std::string>{"$Forwarded", "later", "Later", "$Junk"}));
}

}  // namespace
}  // namespace storemove::interop
