#include "util/fault.h"

#include <cerrno>
#include <mutex>

namespace storemove::fault {

std::atomic<bool> g_active{false};

namespace {
std::mutex mutex;
std::vector<Op> seen;
bool armed = false;
bool fired = false;
uint64_t target = 0;
Kind kind = Kind::kEnospc;
}  // namespace

const char* OpName(Op op) {
  switch (op) {
    case Op::kWrite: return "write";
    case Op::kCreate: return "create";
    case Op::kRename: return "rename";
    case Op::kLink: return "link";
    case Op::kMkdir: return "mkdir";
    case Op::kFsync: return "fsync";
  }
  return "?";
}

const char* KindName(Kind k) {
  switch (k) {
    case Kind::kEnospc: return "ENOSPC";
    case Kind::kEio: return "EIO";
    case Kind::kShortWrite: return "short write";
    case Kind::kEmlink: return "EMLINK";
    case Kind::kExdev: return "EXDEV";
    case Kind::kEinval: return "EINVAL";
  }
  return "?";
}

int Hit(Op op) {
  std::lock_guard<std::mutex> lock(mutex);
  uint64_t index = seen.size();
  seen.push_back(op);
  if (!armed || fired || index != target) return 0;
  fired = true;
  switch (kind) {
    case Kind::kEnospc: return ENOSPC;
    case Kind::kEio: return EIO;
    case Kind::kShortWrite: return op == Op::kWrite ? kShortWrite : ENOSPC;
    case Kind::kEmlink: return EMLINK;
    case Kind::kExdev: return EXDEV;
    case Kind::kEinval: return EINVAL;
  }
  return EIO;
}

void StartCounting() {
  std::lock_guard<std::mutex> lock(mutex);
  seen.clear();
  armed = fired = false;
  g_active.store(true, std::memory_order_relaxed);
}

std::vector<Op> Stop() {
  std::lock_guard<std::mutex> lock(mutex);
  g_active.store(false, std::memory_order_relaxed);
  armed = false;
  return std::move(seen);
}

void Arm(uint64_t index, Kind k) {
  std::lock_guard<std::mutex> lock(mutex);
  seen.clear();
  armed = true;
  fired = false;
  target = index;
  kind = k;
  g_active.store(true, std::memory_order_relaxed);
}

bool Fired() {
  std::lock_guard<std::mutex> lock(mutex);
  return fired;
}

}  // namespace storemove::fault
