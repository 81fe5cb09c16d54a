#include "stream/skipped_contents.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "format/format.h"
#include "util/error.h"
#include "util/read_block.h"

namespace storemove::stream {

bool SkippedContents::Open() {
  if (file_.valid()) return true;
  if (unusable_) return false;
  // On the store's filesystem: its free space is what the restore itself needs, so a quarter of
  // it at most.
  struct statvfs fs;
  if (::statvfs(dir_.c_str(), &fs) == 0)
    max_bytes_ = std::min<uint64_t>(max_bytes_, uint64_t(fs.f_bavail) * fs.f_frsize / 4);
  int fd = ::open(dir_.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) {
    unusable_ = true;
    return false;
  }
  file_ = UniqueFd(fd);
  return true;
}

void SkippedContents::Forget() {
  const Range& r = entries_.front().range;
  // Where holes cannot be punched the bytes stay until the restore ends; the bound then holds
  // for the bodies findable, not for the file.
  (void)::fallocate(file_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off_t(r.offset), off_t(r.size));
  live_ -= r.size;
  entries_.pop_front();
}

void SkippedContents::Begin(uint64_t content_id, uint64_t size) {
  current_.reset();
  // Older contents cannot be linked any more.
  while (!entries_.empty() && content_id - entries_.front().content_id >= format::kLinkCheckWindow) Forget();
  if (!Open() || size > max_bytes_) {
    ++dropped_for_room_;
    return;
  }
  while (!entries_.empty() && live_ + size > max_bytes_) {
    Forget();
    ++dropped_for_room_;
  }
  current_ = Entry{content_id, Range{end_, 0}};
}

void SkippedContents::Append(std::string_view bytes) {
  if (!current_) return;
  Range& r = current_->range;
  if (live_ + r.size + bytes.size() > max_bytes_) {  // more than its record said
    current_.reset();
    ++dropped_for_room_;
    return;
  }
  const char* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    ssize_t n = ::pwrite(file_.get(), p, left, off_t(r.offset + r.size));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {  // full, or any other failure: keep nothing more, the restore goes on
      dropped_for_room_ += entries_.size() + 1;
      unusable_ = true;
      file_.reset();
      entries_.clear();
      live_ = 0;
      current_.reset();
      return;
    }
    p += n;
    left -= size_t(n);
    r.size += uint64_t(n);
  }
}

void SkippedContents::End() {
  if (!current_) return;
  end_ = current_->range.offset + current_->range.size;
  live_ += current_->range.size;
  entries_.push_back(*current_);
  current_.reset();
  ++kept_;
}

std::optional<SkippedContents::Range> SkippedContents::Find(uint64_t content_id) const {
  auto it = std::lower_bound(entries_.begin(), entries_.end(), content_id,
                             [](const Entry& e, uint64_t id) { return e.content_id < id; });
  if (it == entries_.end() || it->content_id != content_id) return std::nullopt;
  return it->range;
}

void SkippedContents::CopyTo(const Range& range, store::MessageWriter& writer) const {
  ReadBlock block;
  for (uint64_t done = 0; done < range.size;) {
    const size_t n = size_t(std::min<uint64_t>(block.size(), range.size - done));
    PreadAll(file_.get(), block.data(), n, off_t(range.offset + done), "the restore's file of skipped contents");
    writer.Write(block.data(), n);
    done += n;
  }
}

bool SkippedContents::SameAs(int fd, const Range& range) const {
  struct stat st;
  if (::fstat(fd, &st) != 0 || uint64_t(st.st_size) != range.size) return false;
  ReadBlock block;
  const size_t half = block.size() / 2;
  char* kept = block.data();
  char* theirs = block.data() + half;
  for (uint64_t done = 0; done < range.size;) {
    const size_t n = size_t(std::min<uint64_t>(half, range.size - done));
    PreadAll(file_.get(), kept, n, off_t(range.offset + done), "the restore's file of skipped contents");
    ssize_t got = ::pread(fd, theirs, n, off_t(done));
    if (got != ssize_t(n) || std::memcmp(kept, theirs, n) != 0) return false;
    done += n;
  }
  return true;
}

}  // namespace storemove::stream
