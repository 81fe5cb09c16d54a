// RefuseForeignLink: links, FIFOs and sockets another user made are refused; ours and root's
// are followed. Making a file of another owner needs root (lchown).
#include "util/foreign_link.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "tests/support/error_code.h"
#include "tests/support/temp_dir.h"
#include "util/error.h"

namespace storemove {
namespace {

using storemove::testing::CodeOf;
using storemove::testing::TempDir;

constexpr uid_t kOther = 65534;  // nobody

Errc CodeOfRefusing(const std::string& path) {
  return CodeOf([&] { RefuseForeignLink(path, "output file"); });
}

TEST(ForeignLink, AnotherUsersLinkOrFifoIsRefusedOursAndRootsAreNot) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to make a file of another owner";
  TempDir tmp;
  std::ofstream(tmp / "target") << "x";
  ASSERT_EQ(::symlink((tmp / "target").c_str(), (tmp / "ours").c_str()), 0);
  ASSERT_EQ(::symlink((tmp / "target").c_str(), (tmp / "theirs").c_str()), 0);
  ASSERT_EQ(::lchown((tmp / "theirs").c_str(), kOther, kOther), 0);
  ASSERT_EQ(::mkfifo((tmp / "fifo").c_str(), 0666), 0);
  ASSERT_EQ(::chown((tmp / "fifo").c_str(), kOther, kOther), 0);
  ASSERT_EQ(::symlink("theirs", (tmp / "ours-to-theirs").c_str()), 0);  // relative, a chain

  EXPECT_NO_THROW(RefuseForeignLink(tmp / "ours", "output file"));
  EXPECT_NO_THROW(RefuseForeignLink(tmp / "target", "output file"));
  EXPECT_NO_THROW(RefuseForeignLink(tmp / "missing", "output file"));
  EXPECT_EQ(CodeOfRefusing(tmp / "theirs"), Errc::kAuth);
  EXPECT_EQ(CodeOfRefusing(tmp / "fifo"), Errc::kAuth);
  EXPECT_EQ(CodeOfRefusing(tmp / "ours-to-theirs"), Errc::kAuth);
  try {
    RefuseForeignLink(tmp / "ours-to-theirs", "output file");
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("output file " + (tmp / "ours-to-theirs") + " (through " + (tmp / "theirs") +
                        ") is a symbolic link owned by "),
              std::string::npos)
        << what;
    EXPECT_NE(what.find("uid 65534), not by this user or root: refusing to follow it"), std::string::npos) << what;
  }
  // A directory link of theirs on the way (root's `import ~joe/mail/*`, ~joe/mail joe's link to a
  // directory only root reads: helper-84), also behind a link of ours, and relative.
  ASSERT_EQ(::mkdir((tmp / "real").c_str(), 0700), 0);
  std::ofstream(tmp / "real/alice.mbox") << "x";
  ASSERT_EQ(::symlink((tmp / "real").c_str(), (tmp / "mail").c_str()), 0);
  ASSERT_EQ(::lchown((tmp / "mail").c_str(), kOther, kOther), 0);
  ASSERT_EQ(::symlink("mail", (tmp / "ours-to-mail").c_str()), 0);
  EXPECT_EQ(CodeOfRefusing(tmp / "mail/alice.mbox"), Errc::kAuth);
  EXPECT_EQ(CodeOfRefusing(tmp / "ours-to-mail/alice.mbox"), Errc::kAuth);
  EXPECT_EQ(CodeOfRefusing(tmp / "real/../mail/alice.mbox"), Errc::kAuth);
  EXPECT_NO_THROW(RefuseForeignLink(tmp / "real/alice.mbox", "output file"));
  ASSERT_EQ(::chdir(tmp.path().c_str()), 0);
  EXPECT_EQ(CodeOfRefusing("mail/alice.mbox"), Errc::kAuth);
  EXPECT_NO_THROW(RefuseForeignLink("real/alice.mbox", "output file"));
  ASSERT_EQ(::chdir("/"), 0);

  // A regular file or directory of another user is the caller's business (its mode, its
  // replacement): only what redirects the path is refused here.
  ASSERT_EQ(::chown((tmp / "target").c_str(), kOther, kOther), 0);
  EXPECT_NO_THROW(RefuseForeignLink(tmp / "target", "output file"));
}

}  // namespace
}  // namespace storemove
