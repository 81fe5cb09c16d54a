#include "store/index.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fcntl.h>

#include "util/bytes.h"
#include "util/error.h"
#include "util/printable.h"
#include "util/fs.h"

namespace storemove::store::index {

void EncodeHeader(const Header& h, uint8_t out[kHeaderSize]) {
  const uint16_t size = HeaderSize(h.minor);
  std::memset(out, 0, size);
  std::memcpy(out, kMagic, 8);
  PutU16(out + 8, h.major);
  PutU16(out + 10, h.minor);
  PutU16(out + 12, size);
  PutU16(out + 14, kRecordSize);
  PutU32(out + 16, h.records_offset);
  PutU32(out + 20, h.uidvalidity);
  PutU32(out + 24, h.uidnext);
  PutU32(out + 28, h.count);
  PutU64(out + 32, h.bytes);
  PutU64(out + 40, static_cast<uint64_t>(h.last_append));
  PutU64(out + 48, static_cast<uint64_t>(h.created));
  PutU32(out + 56, h.flags);
  // Kept in 1.1 too: a 1.0 reader then gets past the checksum and names the real reason it
  // cannot read the file (the header size).
  PutU32(out + 60, Checksum32(out, 60));
  if (size == kHeaderSizeV10) return;
  PutU64(out + 64, h.highest_modseq);
  PutU32(out + 124, Checksum32(out, 124));
}

Header DecodeHeader(const uint8_t* in, size_t size, const std::string& shown) {
  if (size < kHeaderSizeV10) Throw(Errc::kCorrupt, shown + ": truncated header");
  if (std::memcmp(in, kMagic, 8) != 0) Throw(Errc::kCorrupt, shown + ": not a store index (bad magic)");
  if (GetU32(in + 60) != Checksum32(in, 60)) Throw(Errc::kCorrupt, shown + ": bad header checksum");
  Header h;
  h.major = GetU16(in + 8);
  h.minor = GetU16(in + 10);
  if (h.major != kMajor)
    Throw(Errc::kCorrupt, shown + ": unsupported index version " + std::to_string(h.major) + "." +
                              std::to_string(h.minor));
  if (GetU16(in + 12) != HeaderSize(h.minor) || GetU16(in + 14) != kRecordSize)
    Throw(Errc::kCorrupt, shown + ": unexpected header or record size for version 1." + std::to_string(h.minor));
  h.records_offset = GetU32(in + 16);
  h.uidvalidity = GetU32(in + 20);
  h.uidnext = GetU32(in + 24);
  h.count = GetU32(in + 28);
  h.bytes = GetU64(in + 32);
  h.last_append = static_cast<int64_t>(GetU64(in + 40));
  h.created = static_cast<int64_t>(GetU64(in + 48));
  h.flags = GetU32(in + 56);
  const uint16_t hsize = HeaderSize(h.minor);
  if (hsize == kHeaderSize) {
    if (size < kHeaderSize) Throw(Errc::kCorrupt, shown + ": truncated header");
    if (GetU32(in + 124) != Checksum32(in, 124)) Throw(Errc::kCorrupt, shown + ": bad header checksum");
    h.highest_modseq = GetU64(in + 64);
  }
  if (h.records_offset < hsize + 8u || h.records_offset > (1u << 20))
    Throw(Errc::kCorrupt, shown + ": records offset out of range");
  if (h.uidvalidity == 0 || h.uidnext == 0) Throw(Errc::kCorrupt, shown + ": zero UIDVALIDITY or UIDNEXT");
  return h;
}

void EncodeRecord(const MessageMeta& m, uint8_t out[kRecordSize], uint16_t minor) {
  std::memset(out, 0, kRecordSize);
  PutU32(out + 0, m.uid);
  PutU16(out + 4, m.flags);
  PutU64(out + 8, m.size);
  PutU64(out + 16, static_cast<uint64_t>(m.internal_date));
  PutU64(out + 24, static_cast<uint64_t>(m.sent_date));
  PutU64(out + 32, static_cast<uint64_t>(m.save_time));
  PutU64(out + 40, m.user_flags);
  PutU32(out + 48, m.header_size);
  std::memcpy(out + 56, m.digest.bytes.data(), 16);
  if (minor != 0) {
    PutU64(out + 72, m.modseq);
    PutU64(out + 80, static_cast<uint64_t>(m.stored_at));
  }
  PutU32(out + 92, Checksum32(out, 92));
}

MessageMeta DecodeRecord(const uint8_t in[kRecordSize], const std::string& shown, uint32_t record_no,
                         const Header& header) {
  if (GetU32(in + 92) != Checksum32(in, 92))
    Throw(Errc::kCorrupt, shown + ": bad record checksum (record " + std::to_string(record_no) + ")");
  MessageMeta m;
  m.uid = GetU32(in + 0);
  uint16_t flags = GetU16(in + 4);
  m.size = GetU64(in + 8);
  m.internal_date = static_cast<int64_t>(GetU64(in + 16));
  m.sent_date = static_cast<int64_t>(GetU64(in + 24));
  m.save_time = static_cast<int64_t>(GetU64(in + 32));
  m.user_flags = GetU64(in + 40);
  m.header_size = GetU32(in + 48);
  std::memcpy(m.digest.bytes.data(), in + 56, 16);
  // 1.0: the bytes are reserved; whatever is there is not a modseq.
  if (header.minor != 0) {
    m.modseq = GetU64(in + 72);
    m.stored_at = static_cast<int64_t>(GetU64(in + 80));
  }
  if (m.uid == 0 || flags > kAllSystemFlags || m.header_size > m.size)
    Throw(Errc::kCorrupt, shown + ": invalid record " + std::to_string(record_no));
  // Writers raise HIGHESTMODSEQ before (or with) any record's modseq (§4.5), so a record above
  // it is damage, not a race.
  if (m.modseq > header.highest_modseq)
    Throw(Errc::kCorrupt, shown + ": record " + std::to_string(record_no) + " has modseq " + std::to_string(m.modseq) +
                              " above HIGHESTMODSEQ " + std::to_string(header.highest_modseq));
  m.flags = static_cast<uint8_t>(flags);
  return m;
}

namespace {

// User-flag names section right after the header: u32 length, payload, u32 checksum of payload.
// Payload: u8 count, then per name u8 length + bytes.
std::string EncodeNames(const std::vector<std::string>& names) {
  std::string payload;
  AppendU8(&payload, static_cast<uint8_t>(names.size()));
  for (const auto& n : names) {
    AppendU8(&payload, static_cast<uint8_t>(n.size()));
    payload += n;
  }
  std::string out;
  AppendU32(&out, static_cast<uint32_t>(payload.size()));
  out += payload;
  AppendU32(&out, Checksum32(payload.data(), payload.size()));
  return out;
}

void CheckNames(const std::vector<std::string>& names) {
  if (names.size() > kMaxUserFlags) Throw(Errc::kInvalidArgument, "more than 64 user flags in a folder");
  for (const auto& n : names)
    if (n.empty() || n.size() > kMaxUserFlagName || n.find('\0') != std::string::npos)
      Throw(Errc::kInvalidArgument, "invalid user flag name '" + EscapeControls(n) + "'");
}

}  // namespace

namespace {

// Read's body: the records go to Contents::records (keep), to `sink` in slices, or nowhere.
Contents ReadWith(int fd, const std::string& shown, bool keep, const RecordSink* sink) {
  Contents c;
  struct stat st;
  if (::fstat(fd, &st) != 0) ThrowErrno("stat " + shown);
  uint8_t hbuf[kHeaderSize];
  const size_t got = static_cast<size_t>(std::min<off_t>(st.st_size, kHeaderSize));
  if (got < kHeaderSizeV10) Throw(Errc::kCorrupt, shown + ": truncated header (" + std::to_string(st.st_size) + " bytes)");
  PreadAll(fd, hbuf, got, 0, shown);
  c.header = DecodeHeader(hbuf, got, shown);
  const uint16_t hsize = HeaderSize(c.header.minor);
  uint64_t need = uint64_t(c.header.records_offset) + uint64_t(c.header.count) * kRecordSize;
  if (uint64_t(st.st_size) < need)
    Throw(Errc::kCorrupt, shown + ": truncated (" + std::to_string(st.st_size) + " bytes, header promises " +
                              std::to_string(need) + ")");
  std::string names(c.header.records_offset - hsize, '\0');
  PreadAll(fd, names.data(), names.size(), hsize, shown);
  const uint8_t* p = reinterpret_cast<const uint8_t*>(names.data());
  uint32_t len = GetU32(p);
  // 64-bit: a length near 2^32 must not wrap past the check into a read far outside the buffer.
  if (uint64_t{len} + 8 > names.size()) Throw(Errc::kCorrupt, shown + ": user-flag section overruns the header area");
  if (GetU32(p + 4 + len) != Checksum32(p + 4, len)) Throw(Errc::kCorrupt, shown + ": bad user-flag checksum");
  size_t pos = 4;
  if (len < 1) Throw(Errc::kCorrupt, shown + ": empty user-flag section");
  size_t n = p[pos++];
  for (size_t i = 0; i < n; ++i) {
    if (pos >= 4 + len) Throw(Errc::kCorrupt, shown + ": user-flag section truncated");
    size_t l = p[pos++];
    if (pos + l > 4 + len) Throw(Errc::kCorrupt, shown + ": user-flag section truncated");
    c.user_flag_names.emplace_back(names.data() + pos, l);
    pos += l;
  }
  if (!keep && !sink) return c;
  // Read in slices, not whole: a 640,000-message folder's file (61 MB) would otherwise be held
  // beside its decoded records for a moment, doubling a snapshot's peak memory.
  constexpr uint32_t kSlice = 4096;
  std::string buf(size_t(std::min(c.header.count, kSlice)) * kRecordSize, '\0');
  std::vector<MessageMeta> slice;
  std::vector<MessageMeta>& into = keep ? c.records : slice;
  into.reserve(keep ? c.header.count : std::min(c.header.count, kSlice));
  for (uint32_t first = 0; first < c.header.count; first += kSlice) {
    const uint32_t n = std::min(kSlice, c.header.count - first);
    PreadAll(fd, buf.data(), size_t(n) * kRecordSize, off_t(c.header.records_offset + uint64_t(first) * kRecordSize), shown);
    slice.clear();
    for (uint32_t i = 0; i < n; ++i)
      into.push_back(DecodeRecord(reinterpret_cast<const uint8_t*>(buf.data()) + size_t(i) * kRecordSize, shown,
                                  first + i, c.header));
    if (sink) (*sink)(slice.data(), slice.size());
  }
  return c;
}

}  // namespace

Contents Read(int fd, const std::string& shown, bool with_records) { return ReadWith(fd, shown, with_records, nullptr); }

Contents Read(int fd, const std::string& shown, const RecordSink& sink) { return ReadWith(fd, shown, false, &sink); }

Contents ReadFolderIndex(int dirfd, const std::string& dir, const std::string& mailbox, bool with_records) {
  const std::string shown = dir + "/store.idx";
  UniqueFd idx = TryOpenAt(dirfd, "store.idx", O_RDONLY, 0, shown);
  if (!idx.valid()) Throw(Errc::kCorrupt, "mailbox " + mailbox + ": store.idx missing at " + shown);
  return Read(idx.get(), shown, with_records);
}

Contents ReadFolderIndex(int dirfd, const std::string& dir, const std::string& mailbox, const RecordSink& sink) {
  const std::string shown = dir + "/store.idx";
  UniqueFd idx = TryOpenAt(dirfd, "store.idx", O_RDONLY, 0, shown);
  if (!idx.valid()) Throw(Errc::kCorrupt, "mailbox " + mailbox + ": store.idx missing at " + shown);
  return Read(idx.get(), shown, sink);
}

void WriteNew(const std::string& path, const Contents& contents, bool sync) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) {
    WriteNewAt(AT_FDCWD, path, contents, sync, path);
    return;
  }
  const std::string dir = slash == 0 ? "/" : path.substr(0, slash);
  UniqueFd dirfd = OpenFile(dir, O_RDONLY | O_DIRECTORY);
  WriteNewAt(dirfd.get(), path.substr(slash + 1), contents, sync, path);
}

void WriteNewAt(int dirfd, const std::string& name, const Contents& contents, bool sync, const std::string& shown) {
  CheckNames(contents.user_flag_names);
  Header h = contents.header;
  std::string names = EncodeNames(contents.user_flag_names);
  const uint16_t hsize = HeaderSize(h.minor);
  uint32_t offset = kDefaultRecordsOffset;
  while (hsize + names.size() > offset) offset *= 2;
  h.records_offset = offset;
  h.count = static_cast<uint32_t>(contents.records.size());
  std::string file(offset + contents.records.size() * kRecordSize, '\0');
  EncodeHeader(h, reinterpret_cast<uint8_t*>(file.data()));
  std::memcpy(file.data() + hsize, names.data(), names.size());
  for (size_t i = 0; i < contents.records.size(); ++i)
    EncodeRecord(contents.records[i], reinterpret_cast<uint8_t*>(file.data()) + offset + i * kRecordSize, h.minor);
  const std::string tmp = name + ".tmp." + RandomToken();
  const std::string tmp_shown = shown + tmp.substr(name.size());
  {
    UniqueFd fd = OpenAt(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL, 0600, tmp_shown);
    try {
      WriteAll(fd.get(), file.data(), file.size(), tmp_shown);
      if (sync) Fsync(fd.get(), tmp_shown);
    } catch (...) {
      UnlinkAt(dirfd, tmp);
      throw;
    }
  }
  if (int err = RenameAt(dirfd, tmp, dirfd, name)) {
    UnlinkAt(dirfd, tmp);
    ThrowErrno("rename " + tmp_shown, err);
  }
}

void WriteHeader(int fd, const Header& header, const std::string& shown) {
  uint8_t hbuf[kHeaderSize];
  EncodeHeader(header, hbuf);
  PwriteAll(fd, hbuf, HeaderSize(header.minor), 0, shown);
}

void Append(int fd, Header* header, const std::vector<MessageMeta>& records, const std::string& shown, bool sync) {
  if (records.empty()) return;
  std::string buf(records.size() * kRecordSize, '\0');
  for (size_t i = 0; i < records.size(); ++i)
    EncodeRecord(records[i], reinterpret_cast<uint8_t*>(buf.data()) + i * kRecordSize, header->minor);
  off_t at = off_t(header->records_offset) + off_t(header->count) * kRecordSize;
  PwriteAll(fd, buf.data(), buf.size(), at, shown);
  // Records first, header second: a crash between the two leaves the old count, so the new
  // records are simply not there (and are overwritten by the next append).
  if (sync) Fsync(fd, shown);
  header->count += static_cast<uint32_t>(records.size());
  WriteHeader(fd, *header, shown);
  if (sync) Fsync(fd, shown);
}

void RewriteRecord(int fd, const Header& header, uint32_t pos, const MessageMeta& m, const std::string& shown) {
  uint8_t rbuf[kRecordSize];
  EncodeRecord(m, rbuf, header.minor);
  PwriteAll(fd, rbuf, kRecordSize, off_t(header.records_offset) + off_t(pos) * kRecordSize, shown);
}

Opened OpenForWrite(int dirfd, const std::string& name, const std::string& path, bool sync) {
  Opened o;
  o.fd = OpenAt(dirfd, name, O_RDWR, 0, path);
  o.header = Read(o.fd.get(), path, false).header;
  if (o.header.minor != 0) return o;
  // A 1.0 file: rewrite it whole as 1.1 (the header grows, so in place would overwrite the
  // names section). Atomic: a crash leaves the old 1.0 file, which is upgraded next time.
  Contents c = Read(o.fd.get(), path);
  c.header.minor = kMinor;
  WriteNewAt(dirfd, name, c, sync, path);
  o.fd = OpenAt(dirfd, name, O_RDWR, 0, path);
  o.header = Read(o.fd.get(), path, false).header;
  return o;
}

}  // namespace storemove::store::index
