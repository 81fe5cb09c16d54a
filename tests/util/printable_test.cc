// EscapeControls: what a name from outside may look like in a message or a listing.
#include "util/printable.h"

#include <gtest/gtest.h>

namespace storemove {
namespace {

TEST(EscapeControls, ControlCharactersBecomeHexAndTheRestStays) {
  EXPECT_EQ(EscapeControls("Projects/2024"), "Projects/2024");
  EXPECT_EQ(EscapeControls("evil\n\x1b[2Jforged"), "evil\\x0a\\x1b[2Jforged");
  EXPECT_EQ(EscapeControls(std::string("a\0b", 3)), "a\\x00b");
  EXPECT_EQ(EscapeControls("del\x7f"), "del\\x7f");
  EXPECT_EQ(EscapeControls("Entw\xc3\xbc rfe"), "Entw\xc3\xbc rfe");  // UTF-8 stays
  EXPECT_EQ(EscapeControls("csi\xc2\x9b" "2J"), "csi\\xc2\\x9b2J");   // C1 CSI, as UTF-8
  EXPECT_EQ(EscapeControls("nbsp\xc2\xa0"), "nbsp\xc2\xa0");          // U+00A0 is printable
  // A byte of no well-formed UTF-8 sequence: a terminal may take 0x80..0x9f as a C1 control.
  EXPECT_EQ(EscapeControls("cut\xc2"), "cut\\xc2");
  EXPECT_EQ(EscapeControls("x/\x9b" "2Jy"), "x/\\x9b2Jy");
  EXPECT_EQ(EscapeControls("x\xc3\xc2\x9b" "y"), "x\\xc3\\xc2\\x9by");
  EXPECT_EQ(EscapeControls("caf\xe9"), "caf\\xe9");                    // Latin-1
  EXPECT_EQ(EscapeControls("\xe0\x80\xaf"), "\\xe0\\x80\\xaf");     // overlong '/'
  EXPECT_EQ(EscapeControls("\xed\xa0\x80"), "\\xed\\xa0\\x80");     // a surrogate
  EXPECT_EQ(EscapeControls("\xe2\x82\xac \xf0\x9f\x93\xa7"), "\xe2\x82\xac \xf0\x9f\x93\xa7");  // euro, e-mail sign
  EXPECT_EQ(EscapeControls(""), "");
}

}  // namespace
}  // namespace storemove
