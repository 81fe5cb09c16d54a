// Assertions shared by the stream tests: two stores hold the same, and a destination shows no
// half-restored mailbox.
#pragma once

#include <unistd.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "stream/stream.h"
#include "util/fs.h"

namespace storemove::testing {

// A committed message's bytes (an expect failure when its file cannot be opened).
inline std::string ReadMessage(const store::Folder& folder, uint32_t uid) {
  UniqueFd fd = folder.OpenMessage(uid);
  EXPECT_TRUE(fd.valid()) << folder.Mailbox() << " uid " << uid;
  std::string out;
  char buf[65536];
  while (size_t n = ReadSome(fd.get(), buf, sizeof buf, "message")) out.append(buf, n);
  return out;
}

inline void ExpectEqualStores(store::Store& dst, store::Store& src, std::vector<std::string> names = {"/"}) {
  stream::VerifyOptions o;
  o.names = std::move(names);
  stream::VerifyReport r = stream::CompareStores(dst, src, o);
  EXPECT_TRUE(r.equal()) << [&] {
    std::string s;
    for (size_t i = 0; i < r.differences.size() && i < 20; ++i) s += r.differences[i] + "\n";
    return s;
  }();
  EXPECT_GT(r.messages, 0u);
}

// Every visible folder of `dst` is complete and intact: its snapshot reads, its files hash to
// their digests, and it has as many messages as the source's folder.
inline void ExpectNothingHalfVisible(store::Store& dst, store::Store& src) {
  dst.ForEachFolder([&](const store::FolderInfo& info) {
    auto f = dst.OpenFolder(info.user, info.folder);
    auto snap = f->Snapshot();
    for (const auto& m : snap.messages) {
      UniqueFd fd = f->OpenMessage(m.uid);
      ASSERT_TRUE(fd.valid()) << info.Mailbox() << " UID " << m.uid;
      std::string bytes(m.size, '\0');
      ASSERT_EQ(::pread(fd.get(), bytes.data(), m.size, 0), ssize_t(m.size));
      EXPECT_EQ(DigestOf(bytes), m.digest);
    }
    auto source = src.OpenFolder(info.user, info.folder)->Snapshot();
    EXPECT_EQ(snap.messages.size(), source.messages.size()) << info.Mailbox() << " visible but incomplete";
  });
}

}  // namespace storemove::testing
