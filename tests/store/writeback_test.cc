// store::BackgroundWriteback: a restore's disk writes start while it goes on, nothing is done on
// tmpfs, and a failed background syncfs is reported instead of lost.
#include "store/writeback.h"

#include <gtest/gtest.h>

#include "store/sync.h"
#include "tests/support/temp_dir.h"
#include "util/error.h"
#include "util/fault.h"

namespace storemove::store {
namespace {

using storemove::testing::DiskDir;
using storemove::testing::TempDir;

TEST(BackgroundWriteback, OnADiskASyncfsRunsOnceEnoughIsWritten) {
  DiskDir dir;
  auto s = Store::Init(dir / "store", {"primary", "secondary"});
  BackgroundWriteback writeback(*s, /*every_bytes=*/1000);
  if (!writeback.active()) GTEST_SKIP() << "/var/tmp is a memory filesystem here: no disk to write back to";
  writeback.Wrote(999);
  EXPECT_EQ(writeback.runs(), 0u);  // below the threshold nothing is asked for
  writeback.Wrote(1);
  writeback.WaitForRuns(1);
  writeback.Wrote(5000);
  writeback.WaitForRuns(2);
  EXPECT_NO_THROW(writeback.Stop());
  writeback.Wrote(5000);  // after Stop nothing more runs
  EXPECT_EQ(writeback.runs(), 2u);
}

TEST(BackgroundWriteback, OnTmpfsNothingRuns) {
  TempDir dir;
  if (dir.path().rfind("/dev/shm", 0) != 0) GTEST_SKIP() << "no tmpfs at /dev/shm";
  auto s = Store::Init(dir / "store", {});
  BackgroundWriteback writeback(*s, 1);
  EXPECT_FALSE(writeback.active());
  writeback.Wrote(1 << 20);
  EXPECT_EQ(writeback.runs(), 0u);
  EXPECT_NO_THROW(writeback.Stop());
}

TEST(BackgroundWriteback, AFailedSyncfsIsReported) {
  DiskDir dir;
  auto s = Store::Init(dir / "store", {});
  BackgroundWriteback writeback(*s, 1);
  if (!writeback.active()) GTEST_SKIP() << "/var/tmp is a memory filesystem here: no disk to write back to";
  fault::Arm(0, fault::Kind::kEio);  // the next fsync-like call is the background syncfs
  writeback.Wrote(1);
  writeback.WaitForRuns(1);
  const bool fired = fault::Fired();
  fault::Stop();
  ASSERT_TRUE(fired);
  try {
    writeback.Stop();
    FAIL() << "the EIO of the background syncfs was not reported";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::kIo);
    EXPECT_NE(std::string(e.what()).find("syncfs " + dir.path() + "/store: "), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
  }
}

// Stop waits for a round in progress: checked while it still ran, its error would be lost, and
// the final sync (other descriptors) might not hear of it either.
TEST(BackgroundWriteback, StopWaitsForTheRoundInProgressAndReportsItsError) {
  DiskDir dir;
  auto s = Store::Init(dir / "store", {});
  BackgroundWriteback writeback(*s, 1);
  if (!writeback.active()) GTEST_SKIP() << "/var/tmp is a memory filesystem here: no disk to write back to";
  fault::Arm(0, fault::Kind::kEio);
  writeback.Wrote(1);  // asks for a round, and stops at once, while it is likely still running
  bool threw = false;
  try {
    writeback.Stop();
  } catch (const Error& e) {
    threw = true;
    EXPECT_EQ(e.code(), Errc::kIo);
  }
  const bool fired = fault::Fired();
  fault::Stop();
  // A round not yet begun when Stop came is not run (the final sync covers its work); one that
  // ran met the fault and must have been reported.
  EXPECT_EQ(threw, fired);
}

TEST(StoreSync, AFailedSyncfsIsOneLineNamingTheDirectory) {
  TempDir dir;
  auto s = Store::Init(dir / "store", {"primary", "secondary"});
  StoreSync sync(*s);  // one filesystem here: root, mboxlist and partitions share it
  fault::Arm(0, fault::Kind::kEio);
  try {
    sync.Sync();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::kIo);
    EXPECT_NE(std::string(e.what()).find("syncfs " + dir.path() + "/store: "), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
  }
  const bool fired = fault::Fired();
  fault::Stop();
  EXPECT_TRUE(fired);
  EXPECT_NO_THROW(sync.Sync());
}

}  // namespace
}  // namespace storemove::store
