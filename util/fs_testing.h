// Test-only switches of util/fs.cc (kept out of util/fs.h, which nearly everything includes).
#pragma once

namespace storemove {

// Resolve store paths with the component-by-component O_NOFOLLOW walk, as on kernels without
// openat2 (true again restores openat2 where the kernel has it).
void UseOpenat2ForTesting(bool use);

}  // namespace storemove
