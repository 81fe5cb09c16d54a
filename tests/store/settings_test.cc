// Store settings in STORE/config/store.conf (store/settings.h): defaults, the file's syntax,
// validation of names and values, changes that keep the administrator's lines, all or nothing.
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "store/settings.h"
#include "tests/support/temp_dir.h"
#include "util/error.h"
#include "util/fs.h"

namespace storemove::store {
namespace {

using storemove::testing::TempDir;

class Settings : public ::testing::Test {
 protected:
  void SetUp() override { Store::Init(root_, {"primary"}); }
  std::string Text() { return ReadFile(SettingsPath(root_)); }
  void WriteText(const std::string& text) { std::ofstream(SettingsPath(root_), std::ios::binary) << text; }
  // The error's message, or "" when `fn` does not throw.
  template <typename Fn>
  std::string ErrorOf(Fn fn, Errc expected = Errc::kInvalidArgument) {
    try {
      fn();
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), expected) << e.what();
      return e.what();
    }
    return "";
  }
  TempDir dir_;
  std::string root_ = dir_ / "store";
};

TEST_F(Settings, DefaultsWhenTheFileIsAbsent) {
  EXPECT_FALSE(PathExists(SettingsPath(root_)));
  store::Settings s = ReadSettings(root_);
  EXPECT_FALSE(s.relinker_enabled);
  EXPECT_EQ(s.relinker_minsize_kb, 0u);
  auto values = SettingValues(root_);
  ASSERT_EQ(values.size(), 2u);
  EXPECT_EQ(values[0], std::make_pair(std::string(kRelinkerEnabled), std::string("no")));
  EXPECT_EQ(values[1], std::make_pair(std::string(kRelinkerMinSize), std::string("0")));
}

TEST_F(Settings, WrittenValuesAreReadBackByANewReader) {
  WriteSettings(root_, {{"local.store.relinker.enabled", "1"}, {"local.store.relinker.minsize", "4"}});
  // A reader that knows nothing of the writer (another process would do the same).
  auto store = Store::Open(root_);
  store::Settings s = ReadSettings(*store);
  EXPECT_TRUE(s.relinker_enabled);
  EXPECT_EQ(s.relinker_minsize_kb, 4u);
  EXPECT_EQ(s.relinker_min_bytes(), 4096u);
  EXPECT_NE(Text().find("local.store.relinker.enabled=yes\n"), std::string::npos) << Text();
  struct stat st;
  ASSERT_EQ(::stat(SettingsPath(root_).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);

  WriteSettings(root_, {{"local.store.relinker.enabled", "off"}});
  s = ReadSettings(root_);
  EXPECT_FALSE(s.relinker_enabled);
  EXPECT_EQ(s.relinker_minsize_kb, 4u);  // untouched
}

TEST_F(Settings, ValuesAreNormalised) {
  for (const char* yes : {"yes", "YES", "1", "true", "On"}) EXPECT_EQ(NormalizeSetting(kRelinkerEnabled, yes), "yes") << yes;
  for (const char* no : {"no", "0", "False", "off"}) EXPECT_EQ(NormalizeSetting(kRelinkerEnabled, no), "no") << no;
  EXPECT_EQ(NormalizeSetting(kRelinkerMinSize, "007"), "7");
  EXPECT_EQ(NormalizeSetting(kRelinkerMinSize, "1099511627776"), "1099511627776");  // 2^40
}

TEST_F(Settings, BadNamesAndValuesAreRefusedAndChangeNothing) {
  WriteSettings(root_, {{"local.store.relinker.minsize", "2"}});
  const std::string before = Text();
  EXPECT_NE(ErrorOf([&] { WriteSettings(root_, {{"local.store.relinker.enable", "yes"}}); })
                .find("unknown setting 'local.store.relinker.enable' (known: local.store.relinker.enabled, "),
            std::string::npos);
  for (const char* bad : {"", "maybe", "2", "yes please"})
    EXPECT_NE(ErrorOf([&] { WriteSettings(root_, {{"local.store.relinker.enabled", bad}}); }).find("is not yes or no"),
              std::string::npos)
        << bad;
  for (const char* bad : {"", "-1", "1.5", "4K", " 3", "1099511627777", "99999999999999999999", "999999999999999999999"})
    EXPECT_NE(ErrorOf([&] { WriteSettings(root_, {{"local.store.relinker.minsize", bad}}); })
                  .find("is not a size in KB from 0 to 1099511627776"),
              std::string::npos)
        << bad;
  // All or nothing: a good change beside a bad one is not written either.
  EXPECT_NE(ErrorOf([&] {
              WriteSettings(root_, {{"local.store.relinker.enabled", "yes"}, {"local.store.relinker.minsize", "x"}});
            }),
            "");
  EXPECT_EQ(Text(), before);
}

TEST_F(Settings, TheFileSyntax) {
  // Comments, blank lines, spaces around names and values, CRLF: what an administrator's editor makes.
  WriteText("# mine\n\n  local.store.relinker.enabled = yes\r\n\tlocal.store.relinker.minsize=12  \n# end\n");
  store::Settings s = ReadSettings(root_);
  EXPECT_TRUE(s.relinker_enabled);
  EXPECT_EQ(s.relinker_minsize_kb, 12u);

  const std::string path = SettingsPath(root_);
  WriteText("# x\nlocal.store.relinker.enabled\n");
  EXPECT_EQ(ErrorOf([&] { ReadSettings(root_); }), path + " line 2: expected NAME=VALUE");
  WriteText("local.store.relinker.minsize=1\nlocal.store.relinker.minsize=2\n");
  EXPECT_EQ(ErrorOf([&] { ReadSettings(root_); }),
            path + " line 2: local.store.relinker.minsize is set again (first on line 1)");
  WriteText("local.store.relinker.enabled=sometimes\n");
  EXPECT_EQ(ErrorOf([&] { ReadSettings(root_); }),
            path + " line 1: local.store.relinker.enabled: 'sometimes' is not yes or no (nor 1/0, true/false, on/off)");
  WriteText("local.store.relinker.maxage=-1\n");
  EXPECT_NE(ErrorOf([&] { ReadSettings(root_); }).find(path + " line 1: unknown setting 'local.store.relinker.maxage'"),
            std::string::npos);
}

TEST_F(Settings, AChangeKeepsTheAdministratorsLines) {
  WriteText("# tuned by ops, ticket 42\nlocal.store.relinker.minsize = 8\n\n# on for the migration\n");
  WriteSettings(root_, {{"local.store.relinker.enabled", "yes"}});
  EXPECT_EQ(Text(),
            "# tuned by ops, ticket 42\nlocal.store.relinker.minsize = 8\n\n# on for the migration\n"
            "local.store.relinker.enabled=yes\n");
  WriteSettings(root_, {{"local.store.relinker.minsize", "16"}});
  EXPECT_EQ(Text(),
            "# tuned by ops, ticket 42\nlocal.store.relinker.minsize=16\n\n# on for the migration\n"
            "local.store.relinker.enabled=yes\n");
  // A repeated name (an error of the old file) is repaired by setting it.
  WriteText("local.store.relinker.minsize=1\nlocal.store.relinker.minsize=2\n");
  WriteSettings(root_, {{"local.store.relinker.minsize", "3"}});
  EXPECT_EQ(Text(), "local.store.relinker.minsize=3\n");
  // Another bad line is not: nothing is written, and the message names it.
  WriteText("local.store.relinker.minsize=1\nbogus=1\n");
  EXPECT_NE(ErrorOf([&] { WriteSettings(root_, {{"local.store.relinker.enabled", "yes"}}); })
                .find(SettingsPath(root_) + " line 2: unknown setting 'bogus'"),
            std::string::npos);
  EXPECT_EQ(Text(), "local.store.relinker.minsize=1\nbogus=1\n");
}

TEST_F(Settings, ANewFileSaysWhatItIs) {
  WriteSettings(root_, {{"local.store.relinker.enabled", "yes"}});
  EXPECT_TRUE(Text().starts_with("# storemove store settings")) << Text();
  EXPECT_TRUE(Text().ends_with("\nlocal.store.relinker.enabled=yes\n")) << Text();
  // No temporary file is left beside it.
  for (const auto& entry : std::filesystem::directory_iterator(root_ + "/config"))
    EXPECT_EQ(entry.path().filename().string().find(".tmp."), std::string::npos) << entry.path();
}

TEST_F(Settings, ASymlinkInPlaceOfTheFileIsNotFollowed) {
  std::ofstream(dir_ / "elsewhere") << "local.store.relinker.enabled=yes\n";
  ASSERT_EQ(::symlink((dir_ / "elsewhere").c_str(), SettingsPath(root_).c_str()), 0);
  EXPECT_THROW(ReadSettings(root_), Error);
}

}  // namespace
}  // namespace storemove::store
