// Modified UTF-7 (RFC 3501 §5.1.3) both ways: IMAP folder names and Dovecot's Maildir++ names.
#include "interop/modified_utf7.h"

#include <gtest/gtest.h>

#include <string>

#include "util/error.h"

namespace storemove::interop {
namespace {

TEST(ModifiedUtf7, EncodesAsTheRfcExample) {
  EXPECT_EQ(EncodeModifiedUtf7("~peter/mail/台北/日本語"), "~peter/mail/&U,BTFw-/&ZeVnLIqe-");
  EXPECT_EQ(EncodeModifiedUtf7("a&b"), "a&-b");
  EXPECT_EQ(EncodeModifiedUtf7("Entwürfe"), "Entw&APw-rfe");
  EXPECT_EQ(EncodeModifiedUtf7("\xF0\x9F\x98\x80"), "&2D3eAA-");  // U+1F600 as a surrogate pair
  EXPECT_EQ(EncodeModifiedUtf7("tab\there"), "tab&AAk-here");     // control characters are encoded
  EXPECT_EQ(EncodeModifiedUtf7("caf\xe9"), "caf\\e9");             // Latin-1 byte: listescape form
}

TEST(ModifiedUtf7, DecodesWhatItEncodes) {
  for (const std::string name : {"", "INBOX", "a&b", "&", "&&-", "Entwürfe", "~peter/mail/台北/日本語",
                                 "\xF0\x9F\x98\x80 and \xF0\x9F\x92\xA9", "é", "éé", "ééé", "日本語日本語日",
                                 "tab\there", "x-y&-z"}) {
    EXPECT_EQ(DecodeModifiedUtf7(EncodeModifiedUtf7(name)), name) << EncodeModifiedUtf7(name);
  }
  EXPECT_EQ(DecodeModifiedUtf7("&U,BTFw-/&ZeVnLIqe-"), "台北/日本語");
  EXPECT_EQ(DecodeModifiedUtf7("Sent-Items"), "Sent-Items");  // '-' outside a run is itself
}

TEST(ModifiedUtf7, RefusesWhatIsNotModifiedUtf7) {
  for (const std::string& bad : {std::string("&U,BTFw"),    // no closing '-'
                                std::string("&U/BTFw-"),   // '/' is not in the alphabet (',' is)
                                std::string("&AP-"),       // 12 bits: a unit and a half... of nothing
                                std::string("&APx-"),      // leftover bits are not zero
                                std::string("&2D0-"),      // a high surrogate alone
                                std::string("&3gA-"),      // a low surrogate alone
                                std::string("caf\xc3\xa9"),  // raw 8-bit
                                std::string("a\nb"), std::string("a\0b", 3)}) {
    EXPECT_FALSE(TryDecodeModifiedUtf7(bad)) << bad;
  }
  try {
    DecodeModifiedUtf7("a\nb&");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::kCorrupt);
    EXPECT_STREQ(e.what(), "not modified UTF-7: a\\0ab&");
  }
}

}  // namespace
}  // namespace storemove::interop
