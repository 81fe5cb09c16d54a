// HeaderSize and SentDate: hand-made cases for each rule, then every message of the corpus.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "store/store.h"
#include "util/fs.h"

namespace storemove::store {
namespace {

TEST(HeaderSizeTest, FindsTheFirstEmptyLine) {
  EXPECT_EQ(HeaderSize("A: 1\nB: 2\n\nbody\n\nmore\n"), 11u);
  EXPECT_EQ(HeaderSize("A: 1\r\nB: 2\r\n\r\nbody\r\n"), 14u);
  EXPECT_EQ(HeaderSize("A: 1\r\n\nbody"), 7u);     // mixed: a bare LF line is empty too
  EXPECT_EQ(HeaderSize("A: 1\n\r\nbody"), 7u);
  EXPECT_EQ(HeaderSize("A: 1\nB: 2\n\n"), 11u);    // header only, ends with the empty line
}

TEST(HeaderSizeTest, MessageStartingWithEmptyLine) {
  EXPECT_EQ(HeaderSize("\nbody\n"), 1u);
  EXPECT_EQ(HeaderSize("\r\nbody\r\n"), 2u);
}

TEST(HeaderSizeTest, NoEmptyLineMeansWholeMessage) {
  EXPECT_EQ(HeaderSize("A: 1\nB: 2\n"), 10u);
  EXPECT_EQ(HeaderSize("A: 1\nB: 2"), 9u);
  EXPECT_EQ(HeaderSize("A: 1\r\r\nB"), 8u);  // "\r\r\n" is not an empty line
  EXPECT_EQ(HeaderSize(""), 0u);
  EXPECT_EQ(HeaderSize("x"), 1u);
}

int64_t Date(const std::string& value) { return SentDate("From: a@b\nDate: " + value + "\nSubject: s\n\n"); }

TEST(SentDateTest, Rfc5322Forms) {
  EXPECT_EQ(Date("Tue, 16 Jul 2002 12:11:35 +0300"), 1026810695);
  EXPECT_EQ(Date("16 Jul 2002 12:11:35 +0300"), 1026810695);  // no day of week
  EXPECT_EQ(Date("Fri, 07 Mar 1997 02:50:39 -0800"), 857731839);
  EXPECT_EQ(Date("Sun, 1 Feb 2004 13:05 +0530"), 1075620900);  // no seconds
  EXPECT_EQ(Date("Tue, 29 Feb 2000 00:00:00 +0000"), 951782400);
  EXPECT_EQ(Date("Wed, 31 Dec 1969 23:59:59 +0000"), -1);
}

TEST(SentDateTest, ObsoleteForms) {
  EXPECT_EQ(Date("Tue, 16 Jul 2002 12:11:35 EDT"), 1026835895);
  EXPECT_EQ(Date("Tue, 5 Jan 99 08:00:00 EST"), 915541200);      // 2-digit year 50-99
  EXPECT_EQ(Date("31 Dec 49 23:59 GMT"), 2524607940);            // 2-digit year 00-49
  EXPECT_EQ(Date("1 Jan 50 00:00:00 UT"), -631152000);
  EXPECT_EQ(Date("3 Feb 001 04:05:00 +0000"), -2174586900);      // 3-digit year
  EXPECT_EQ(Date("Sun, 10 Oct 2010 10:10:10 PDT"), 1286730610);
  EXPECT_EQ(Date("Sun, 10 Oct 2010 10:10:10 CST"), 1286727010);
  EXPECT_EQ(Date("Sun, 10 Oct 2010 10:10:10 CDT"), 1286723410);
  EXPECT_EQ(Date("Sun, 10 Oct 2010 10:10:10 MST"), 1286730610);
  EXPECT_EQ(Date("Sun, 10 Oct 2010 10:10:10 MDT"), 1286727010);
  EXPECT_EQ(Date("Sun, 10 Oct 2010 10:10:10 PST"), 1286734210);
  EXPECT_EQ(Date("Sun, 10 Oct 2010 10:10:10 pst"), 1286734210);
  // Military zones and unknown or ambiguous names carry no usable offset: -0000 (RFC 5322 §4.3),
  // the time read as UTC.
  EXPECT_EQ(Date("Tue, 16 Jul 2002 12:11:35 Z"), 1026821495);
  EXPECT_EQ(Date("Tue, 16 Jul 2002 12:11:35 A"), 1026821495);
  EXPECT_EQ(Date("Tue, 16 Jul 2002 12:11:35 IST"), 1026821495);  // India, Ireland or Israel
  EXPECT_EQ(Date("Tue, 16 Jul 2002 12:11:35 XYZT"), 1026821495);
  EXPECT_EQ(Date("Tue, 16 Jul 2002 12:11:35 UTC"), 1026821495);
  // Extra white space, comments (nested, quoted-pair), space before the colon of the name.
  EXPECT_EQ(Date("  Tue ,  16   Jul\t2002  12:11:35   +0300  "), 1026810695);
  EXPECT_EQ(Date("Tue, 16 Jul 2002 12:11:35 +0300 (IDT)"), 1026810695);
  EXPECT_EQ(Date("(a (nested \\) comment)) Tue, 16 (x) Jul 2002 12:11:35 +0300"), 1026810695);
  EXPECT_EQ(SentDate("Date : Tue, 16 Jul 2002 12:11:35 +0300\n\n"), 1026810695);
}

// An mbox "From " line written by date(1) in Berlin says CEST: it was read as UTC (two hours
// late) while EST was honoured. The common unambiguous abbreviations count.
TEST(SentDateTest, CommonZoneAbbreviations) {
  const int64_t utc = 1026821495;  // Tue, 16 Jul 2002 12:11:35 +0000
  const std::vector<std::pair<const char*, int>> zones = {
      {"CET", 60},       {"CEST", 120}, {"cest", 120},  {"MET", 60},     {"MEST", 120},   {"WET", 0},
      {"WEST", 60},      {"BST", 60},   {"EET", 120},   {"EEST", 180},   {"MSK", 180},    {"JST", 540},
      {"AEST", 600},     {"AEDT", 660}, {"NZST", 720},  {"NZDT", 780},   {"HST", -600},   {"AKST", -540},
      {"AKDT", -480},    {"GMT", 0},    {"UT", 0}};
  for (const auto& [zone, minutes] : zones)
    EXPECT_EQ(Date(std::string("Tue, 16 Jul 2002 12:11:35 ") + zone), utc - minutes * 60) << zone;
  EXPECT_EQ(SentDate("Date: Tue Jul 16 12:11:35 CEST 2002\n\n"), utc - 7200);  // as an mbox "From " line has it
}

TEST(SentDateTest, FormsSeenInTheWild) {
  EXPECT_EQ(Date("Mon Jun  3 12:50:27 1996"), 833806227);             // asctime
  EXPECT_EQ(Date("Sat Nov 28 22:00:00 PST 2026"), 1795932000);        // asctime with a zone
  EXPECT_EQ(Date("Sat Nov 28 22:00:00 2026 -0800"), 1795932000);
  EXPECT_EQ(Date("28-Nov-2026 10:00:00 +0000"), 1795860000);
  EXPECT_EQ(Date("2026-11-28 10:00:00"), 1795860000);
  EXPECT_EQ(Date("Sat, 28 November 2026 10:00:00 GMT+0000"), 1795860000);
  EXPECT_EQ(Date("Sat, 28 Nov 2026 10:00:00.250 +0000"), 1795860000);
  EXPECT_EQ(Date("Sat, 28 Nov 2026 10:00:00+0000"), 1795860000);
  EXPECT_EQ(Date("Sat, 28 Nov 2026 10:00:00 AM +0000"), 1795860000);
  EXPECT_EQ(Date("Sat, 28 Nov 2026 10:00:00 PM -0000"), 1795860000 + 12 * 3600);
}

TEST(SentDateTest, FindsTheFieldCaseInsensitivelyAndUnfolds) {
  EXPECT_EQ(SentDate("DATE: Tue, 16 Jul 2002 12:11:35 +0300\n\n"), 1026810695);
  EXPECT_EQ(SentDate("date: Tue, 16 Jul 2002 12:11:35 +0300\r\n\r\n"), 1026810695);
  EXPECT_EQ(SentDate("Subject: x\r\nDate: Tue,\r\n 16 Jul 2002\r\n\t12:11:35\r\n +0300\r\nTo: y\r\n\r\n"), 1026810695);
  // An mbox "From " line before the header, and Resent-Date before Date.
  EXPECT_EQ(SentDate("From a@b Thu Nov 28 10:00:00 2026\nResent-Date: 1 Jan 2000 00:00 +0000\n"
                     "Date: Tue, 16 Jul 2002 12:11:35 +0300\n\n"),
            1026810695);
  // The first Date field counts, even when a later one would parse.
  EXPECT_EQ(SentDate("Date: garbage\nDate: Tue, 16 Jul 2002 12:11:35 +0300\n\n"), 0);
  // A whole message: a "Date:" line in the body is not the header's.
  EXPECT_EQ(SentDate("Subject: x\n\nDate: Tue, 16 Jul 2002 12:11:35 +0300\n"), 0);
  EXPECT_EQ(SentDate("Dated: Tue, 16 Jul 2002 12:11:35 +0300\n\n"), 0);
  EXPECT_EQ(SentDate("X-Date: Tue, 16 Jul 2002 12:11:35 +0300\n\n"), 0);
}

TEST(SentDateTest, GarbageIsZero) {
  EXPECT_EQ(SentDate(""), 0);
  EXPECT_EQ(SentDate("Subject: no date\n\n"), 0);
  EXPECT_EQ(Date(""), 0);
  EXPECT_EQ(Date("yesterday"), 0);
  EXPECT_EQ(Date("1234567890"), 0);
  EXPECT_EQ(Date("Tue, 16 Jul 2002"), 0);                  // no time
  EXPECT_EQ(Date("Tue, Jul 2002 12:11:35 +0300"), 0);      // no day
  EXPECT_EQ(Date("Tue, 16 2002 12:11:35 +0300"), 0);       // no month
  EXPECT_EQ(Date("Tue, 30 Feb 2002 12:11:35 +0300"), 0);   // no such day
  EXPECT_EQ(Date("Tue, 29 Feb 2001 12:11:35 +0300"), 0);
  EXPECT_EQ(Date("Tue, 16 Jul 2002 24:00:00 +0300"), 0);
  EXPECT_EQ(Date("Tue, 16 Jul 2002 12:61:00 +0300"), 0);
  EXPECT_EQ(Date("Tue, 16 Jul 2002 1:2:3:4 +0300"), 0);
  EXPECT_EQ(Date("Tue, 16 Jul 99999999999999999999 12:11:35"), 0);
  EXPECT_EQ(Date("Tue, 16 Jul 2002 123:11:35 +0300"), 0);
  EXPECT_EQ(Date("(unterminated comment 16 Jul 2002 12:11:35"), 0);
}

// Every prefix and random mutation of real dates, each in a buffer of exactly its size so that
// AddressSanitizer builds catch any read past the end. Checks only plausibility of the result.
TEST(SentDateTest, NeverReadsOutOfBounds) {
  const std::vector<std::string> seeds = {
      "Date: Tue, 16 Jul 2002 12:11:35 +0300 (IDT)\n", "Date: Mon Jun  3 12:50:27 1996\r\n",
      "Date: 28-Nov-2026 10:00:00.5 GMT+02:00\n", "Date: (a(b\\)c)d) 2026-11-28 10:00 PM\n"};
  std::mt19937 rng(12345);
  const std::string alphabet = "0123456789:+-().,\\ \t\r\nADJFMSONTZadjfmsontz";
  int parsed = 0;
  for (const std::string& seed : seeds) {
    for (size_t n = 0; n <= seed.size(); ++n) {
      auto buf = std::make_unique<char[]>(n);
      std::copy(seed.begin(), seed.begin() + static_cast<std::ptrdiff_t>(n), buf.get());
      const int64_t t = SentDate(std::string_view(buf.get(), n));
      if (t != 0) ++parsed;
      EXPECT_LE(HeaderSize(std::string_view(buf.get(), n)), n);
    }
    for (int round = 0; round < 2000; ++round) {
      std::string s = seed;
      for (int k = 0; k < 3; ++k) s[6 + rng() % (s.size() - 6)] = alphabet[rng() % alphabet.size()];
      auto buf = std::make_unique<char[]>(s.size());
      std::copy(s.begin(), s.end(), buf.get());
      const int64_t t = SentDate(std::string_view(buf.get(), s.size()));
      // Any accepted value stays within years 1..9999 and a day's worth of zone offset.
      EXPECT_GE(t, -62135596800 - 86400) << s;
      EXPECT_LE(t, 253402300800 + 86400) << s;
    }
  }
  EXPECT_GE(parsed, 4);  // the complete seeds themselves parse
}

// --- the corpus ------------------------------------------------------------------------

struct CorpusFile {
  std::string path;
  uint64_t bytes;
  std::string flags;
};

std::vector<CorpusFile> CorpusFiles() {
  std::vector<CorpusFile> files;
  for (const auto& source : std::filesystem::directory_iterator(STOREMOVE_CORPUS)) {
    std::ifstream manifest(source.path() / "MANIFEST.tsv");
    if (!manifest) continue;
    std::string line;
    std::getline(manifest, line);  // column names
    while (std::getline(manifest, line)) {
      std::istringstream fields(line);
      CorpusFile f;
      std::string sha;
      std::getline(fields, f.path, '\t');
      fields >> f.bytes;
      fields.ignore(1);
      std::getline(fields, sha, '\t');
      std::getline(fields, f.flags);
      f.path = (source.path() / f.path).string();
      files.push_back(std::move(f));
    }
  }
  return files;
}

TEST(Rfc822CorpusTest, EveryMessage) {
  if (!std::filesystem::is_directory(STOREMOVE_CORPUS)) GTEST_SKIP() << "corpus absent: " << STOREMOVE_CORPUS;
  const std::vector<CorpusFile> files = CorpusFiles();
  ASSERT_GT(files.size(), 10000u);
  size_t with_date = 0, dated = 0, with_separator = 0, separated = 0;
  for (const CorpusFile& f : files) {
    const std::string message = ReadFile(f.path);
    ASSERT_EQ(message.size(), f.bytes) << f.path;
    const uint32_t header_size = HeaderSize(message);
    ASSERT_LE(header_size, message.size()) << f.path;
    const std::string_view header = std::string_view(message).substr(0, header_size);
    const int64_t sent = SentDate(header);
    EXPECT_EQ(sent, SentDate(message)) << f.path;  // the header alone is enough
    if (f.flags.find("\"no_body_sep\"") == std::string::npos) {
      ++with_separator;
      if (header.ends_with("\n\n") || header.ends_with("\n\r\n") || header == "\n" || header == "\r\n") ++separated;
    }
    if (f.flags.find("\"no_date\"") == std::string::npos) {
      ++with_date;
      // Mail of this corpus was written between 1980 and 2026.
      if (sent >= 315532800 && sent < 1798761600) ++dated;
    }
  }
  // The corpus's own analysis (flags) found a header/body separator and a Date field in these.
  EXPECT_EQ(separated, with_separator);
  EXPECT_GE(static_cast<double>(dated), 0.995 * static_cast<double>(with_date))
      << dated << " of " << with_date << " Date fields read";
}

}  // namespace
}  // namespace storemove::store
