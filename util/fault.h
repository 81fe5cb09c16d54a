// Fault injection for the store's write paths (a lighter cousin of LevelDB's fault-injection
// Env): tests make the Nth write, create, rename, link, mkdir or fsync fail with ENOSPC, EIO,
// a short write, EMLINK, EXDEV or EINVAL (renameat2 flags a filesystem lacks), and check that the operation fails cleanly and a rerun
// repairs. util/fs.cc's wrappers consult it; when nothing is armed the cost is one relaxed
// atomic load per call.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

namespace storemove::fault {

enum class Op : uint8_t { kWrite, kCreate, kRename, kLink, kMkdir, kFsync };
enum class Kind : uint8_t { kEnospc, kEio, kShortWrite, kEmlink, kExdev, kEinval };
const char* OpName(Op op);
const char* KindName(Kind kind);

// Returned by Check(kWrite) for a short write: write part of the data, then fail with ENOSPC
// (what a filling disk does). An overwrite of bytes already in the file fails without writing
// anything: no disk tears a write into allocated blocks for lack of space.
constexpr int kShortWrite = -1;

extern std::atomic<bool> g_active;
int Hit(Op op);
// 0: go ahead; otherwise the errno to fail with (or kShortWrite).
inline int Check(Op op) {
  if (!g_active.load(std::memory_order_relaxed)) [[likely]] return 0;
  return Hit(op);
}

// --- control, for tests (thread-safe) ---
// Starts counting injectable calls from 0, recording each call's kind; nothing fails.
void StartCounting();
// Stops counting or injecting; returns the calls seen since StartCounting() or Arm().
std::vector<Op> Stop();
// From now on, call number `index` (0-based) fails with `kind`; later calls go ahead.
void Arm(uint64_t index, Kind kind);
// True when the armed fault was delivered.
bool Fired();

}  // namespace storemove::fault
