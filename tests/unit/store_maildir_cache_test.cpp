// Tests for store/maildir_cache.hpp: the format (round trip, strict parsing)
// and its use by MaildirOpener (store/maildir.hpp): a later open is served
// from the cache only while cur/ and apop-uidl are unchanged, a "dirty" cache
// is checked against the directory, and every change is seen.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/limits.hpp"
#include "store/maildir.hpp"
#include "store/maildir_cache.hpp"
#include "temp_dir.hpp"

namespace apop::store {
namespace {

namespace fs = std::filesystem;

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_file(const fs::path& p, const std::string& content) {
  std::ofstream out(p, std::ios::binary);
  out << content;
  ASSERT_TRUE(out.good()) << p;
}

// --- format ----------------------------------------------------------------

std::string sample() {
  StatKey cur{1, 2, 4096, 1700000000, 123456789};
  StatKey map{1, 3, 40, 1700000001, 5};
  std::vector<CacheRecord> recs = {
      {"1.M1P1.h,S=5,W=6:2,", 16, 6, "1.M1P1.h"},
      {"2.M2P2.h:2,S", 8, 99, "UIDL-from-map"},
      {"3.plain", 7, 1, "3.plain"},
  };
  return encode_maildir_cache(cur, map, true, recs);
}

TEST(MaildirCacheFormat, RoundTrip) {
  const std::string data = sample();
  auto v = parse_maildir_cache(data);
  ASSERT_TRUE(v.ok()) << v.error().message;
  EXPECT_TRUE(v->clean);
  EXPECT_EQ(v->cur, (StatKey{1, 2, 4096, 1700000000, 123456789}));
  EXPECT_EQ(v->uidl_map, (StatKey{1, 3, 40, 1700000001, 5}));
  ASSERT_EQ(v->count, 3u);
  EXPECT_EQ(v->records()[0].name, "1.M1P1.h,S=5,W=6:2,");
  EXPECT_EQ(v->records()[0].base_len, 16u);
  EXPECT_EQ(v->records()[0].size, 6u);
  EXPECT_EQ(v->records()[0].uidl, "1.M1P1.h");
  EXPECT_EQ(v->records()[1].uidl, "UIDL-from-map");
  EXPECT_EQ(v->records()[2].name, "3.plain");
  EXPECT_EQ(v->records()[2].base_len, 7u);
  auto empty = parse_maildir_cache(encode_maildir_cache({}, {}, false, {}));
  ASSERT_TRUE(empty.ok());
  EXPECT_FALSE(empty->clean);
  EXPECT_TRUE(empty->count == 0);
}

TEST(MaildirCacheFormat, EveryTruncationAndEveryFlippedByteIsRejected) {
  const std::string data = sample();
  for (std::size_t n = 0; n < data.size(); ++n) {
    EXPECT_FALSE(parse_maildir_cache(data.substr(0, n)).ok()) << "prefix " << n;
  }
  for (std::size_t i = 0; i < data.size(); ++i) {
    std::string bad = data;
    bad[i] = static_cast<char>(bad[i] ^ 0x20);
    EXPECT_FALSE(parse_maildir_cache(bad).ok()) << "byte " << i;
  }
  EXPECT_FALSE(parse_maildir_cache(data + "x").ok());
}

// A damaged file whose checksum was fixed up is still rejected by the
// structural checks.
std::string with_checksum(std::string body) {
  body.resize(body.size() - 8);
  const std::uint64_t c = cache_checksum(body);
  body.append(reinterpret_cast<const char*>(&c), 8);
  return body;
}

TEST(MaildirCacheFormat, OtherVersionAndBadFieldsAreRejected) {
  std::string data = sample();
  std::string v2 = data;
  const std::uint32_t two = 2;
  std::memcpy(v2.data() + 12, &two, 4);
  auto r = parse_maildir_cache(with_checksum(v2));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("version"), std::string::npos);

  std::string order = data;
  std::swap(order[8], order[11]);
  EXPECT_FALSE(parse_maildir_cache(with_checksum(order)).ok());

  // A '/' in a name, a space in a UIDL, a base length past ':'.
  const std::size_t text = 112 + 3 * 16;
  std::string slash = data;
  slash[text + 1] = '/';
  EXPECT_FALSE(parse_maildir_cache(with_checksum(slash)).ok());
  std::string space = data;
  space[text + 19 + 2] = ' ';  // inside the first UIDL
  EXPECT_FALSE(parse_maildir_cache(with_checksum(space)).ok());
  std::string base = data;
  base[112 + 10] = 19;  // first record's base length 19: the base would hold the ':'
  EXPECT_FALSE(parse_maildir_cache(with_checksum(base)).ok());
  EXPECT_TRUE(parse_maildir_cache(with_checksum(data)).ok());
}

TEST(MaildirCacheFormat, StreamedWriteEqualsEncodingAcrossChunks) {
  // Over 768 KiB: several 256 KiB pieces, odd lengths so pieces end mid-word.
  std::vector<std::string> names, uidls;
  for (std::size_t i = 0; i < 20000; ++i) {
    names.push_back(std::to_string(1700000000 + i) + ".M" + std::to_string(i * 7) + "P1." +
                    std::string(i % 61, 'h') + ":2,S");
    uidls.push_back("u" + std::to_string(i) + std::string(i % 13, 'x'));
  }
  std::vector<CacheRecord> recs;
  for (std::size_t i = 0; i < names.size(); ++i) {
    recs.push_back({names[i], names[i].size() - 4, i * 3, uidls[i]});
  }
  const StatKey cur{7, 8, 9, 10, 11};
  const std::string encoded = encode_maildir_cache(cur, {}, false, recs);
  ASSERT_GT(encoded.size(), 3u * 256 * 1024);
  ::apop::test::TempDir tmp;
  const int dirfd = ::open(tmp.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(dirfd, 0);
  ASSERT_TRUE(write_maildir_cache(dirfd, cur, {}, false, recs.size(), [&recs](std::size_t i) {
                return recs[i];
              }).ok());
  ::close(dirfd);
  EXPECT_EQ(read_file(tmp.path() / std::string(kMaildirCacheFile)), encoded);
  EXPECT_FALSE(fs::exists(tmp.path() / std::string(kMaildirCacheTmp)));
  auto v = parse_maildir_cache(encoded);
  ASSERT_TRUE(v.ok()) << v.error().message;
  ASSERT_EQ(v->count, recs.size());
  const auto back = v->records();
  EXPECT_EQ(back[19999].name, names[19999]);
  EXPECT_EQ(back[19999].uidl, uidls[19999]);
  EXPECT_EQ(back[19999].size, 19999u * 3);
}

TEST(MaildirCacheFormat, MtimeSettled) {
  const timespec now{1000, 500};
  EXPECT_TRUE(mtime_settled({998, 500}, now));
  EXPECT_TRUE(mtime_settled({998, 499}, now));
  EXPECT_FALSE(mtime_settled({998, 501}, now));
  EXPECT_FALSE(mtime_settled({999, 0}, now));
  EXPECT_FALSE(mtime_settled({1001, 0}, now));  // in the future (clock stepped back)
}

// --- use by MaildirOpener --------------------------------------------------

constexpr std::size_t kBig = kMaildirCacheMinMessages;

class MaildirCacheTest : public ::testing::Test {
 protected:
  fs::path root() const { return tmp_.path() / "mail"; }
  fs::path box() const { return root() / "alice"; }
  fs::path cur() const { return box() / "cur"; }
  fs::path cache() const { return box() / std::string(kMaildirCacheFile); }

  void SetUp() override { ASSERT_TRUE(ensure_maildir(box()).ok()); }

  static std::string body(std::size_t i) { return "Subject: " + std::to_string(i) + "\n\nx\n"; }
  static std::string name(std::size_t i) {
    const std::string b = body(i);
    return std::to_string(1700000000 + i) + ".M" + std::to_string(i) +
           "P1.test,S=" + std::to_string(b.size()) + ",W=" + std::to_string(b.size() + 3) + ":2,";
  }
  static std::string uidl_of(std::size_t i) { return name(i).substr(0, name(i).find(",S=")); }
  void fill(std::size_t n, std::size_t from = 0) {
    for (std::size_t i = from; i < from + n; ++i) write_file(cur() / name(i), body(i));
  }

  // Sets cur/'s mtime (and leaves everything else).
  void set_cur_mtime(const timespec& t) {
    const timespec times[2] = {t, t};
    ASSERT_EQ(::utimensat(AT_FDCWD, cur().c_str(), times, 0), 0);
  }
  timespec cur_mtime() {
    struct stat st {};
    EXPECT_EQ(::stat(cur().c_str(), &st), 0);
    return st.st_mtim;
  }
  void age_cur() { set_cur_mtime({::time(nullptr) - 60, 0}); }

  std::unique_ptr<pop3::Maildrop> open_box() {
    MaildirOpener opener(root());
    auto r = opener.open("alice");
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    if (!r.ok()) return nullptr;
    return std::move(r).value();
  }

  std::optional<MaildirCacheView> cache_view(std::string& keep) {
    keep = read_file(cache());
    auto v = parse_maildir_cache(keep);
    if (!v.ok()) return std::nullopt;
    return std::move(v.value());
  }

  static std::vector<std::string> uidls(const pop3::Maildrop& d) {
    std::vector<std::string> out;
    for (const auto& m : d.messages()) out.push_back(m.uidl);
    return out;
  }

  ::apop::test::TempDir tmp_;
};

TEST_F(MaildirCacheTest, SmallMaildropsGetNoCacheAndLoseAStaleOne) {
  fill(kBig - 1);
  age_cur();
  ASSERT_TRUE(open_box());
  EXPECT_FALSE(fs::exists(cache()));
  write_file(cache(), "stale");
  ASSERT_TRUE(open_box());
  EXPECT_FALSE(fs::exists(cache()));
}

TEST_F(MaildirCacheTest, SettledMaildirGetsACleanCacheThatServesLaterOpens) {
  fill(kBig);
  age_cur();
  std::vector<std::string> first;
  {
    auto d = open_box();
    ASSERT_TRUE(d);
    ASSERT_EQ(d->messages().size(), kBig);
    first = uidls(*d);
  }
  std::string keep;
  auto v = cache_view(keep);
  ASSERT_TRUE(v);
  EXPECT_TRUE(v->clean);
  ASSERT_EQ(v->count, kBig);
  EXPECT_EQ(v->records()[0].name, name(0));
  EXPECT_EQ(v->records()[0].size, body(0).size() + 3);
  EXPECT_EQ((fs::status(cache()).permissions() & fs::perms::all),
            fs::perms::owner_read | fs::perms::owner_write);

  // Proof that a later open reads the cache and not cur/: a UIDL changed in
  // the file (checksum fixed) shows up.
  {
    std::string data = read_file(cache());
    const std::size_t at = data.find(name(0) + first[0]);  // a name, then its UIDL
    ASSERT_NE(at, std::string::npos);
    data[at + name(0).size()] = 'Z';
    data.resize(data.size() - 8);
    const std::uint64_t c = cache_checksum(data);
    data.append(reinterpret_cast<const char*>(&c), 8);
    write_file(cache(), data);
  }
  auto d = open_box();
  ASSERT_TRUE(d);
  ASSERT_EQ(d->messages().size(), kBig);
  EXPECT_EQ(d->messages()[0].uidl[0], 'Z');
  EXPECT_EQ(uidls(*d).back(), first.back());
}

TEST_F(MaildirCacheTest, DeliveryAndRemovalChangeCurAndAreSeen) {
  fill(kBig);
  age_cur();
  ASSERT_TRUE(open_box());
  ASSERT_TRUE(fs::exists(cache()));
  // A delivery into new/ (moved to cur/ by the next open).
  write_file(box() / "new" / name(kBig), body(kBig));
  {
    auto d = open_box();
    ASSERT_TRUE(d);
    ASSERT_EQ(d->messages().size(), kBig + 1);
  }
  // A message removed by another program (an IMAP client's expunge).
  fs::remove(cur() / name(3));
  age_cur();  // even an old mtime differs from the cached key
  auto d = open_box();
  ASSERT_TRUE(d);
  ASSERT_EQ(d->messages().size(), kBig);
  for (const auto& m : d->messages()) EXPECT_NE(m.uidl, uidl_of(3));
  std::string keep;
  auto v = cache_view(keep);
  ASSERT_TRUE(v);
  for (const auto& r : v->records()) EXPECT_NE(r.name, name(3));
}

TEST_F(MaildirCacheTest, FreshCurMakesADirtyCacheThatIsCheckedAgainstTheDirectory) {
  fill(kBig);
  // cur/ changed just now: the cache is written "dirty".
  ASSERT_TRUE(open_box());
  std::string keep;
  auto v = cache_view(keep);
  ASSERT_TRUE(v);
  EXPECT_FALSE(v->clean);
  const timespec key_mtime = cur_mtime();

  // The race the dirty flag guards against: a file added to cur/ in the same
  // timestamp tick as the stat (simulated: the mtime is put back, and a
  // file removed so ext4/tmpfs directory sizes stay the same).
  fs::remove(cur() / name(0));
  write_file(cur() / name(kBig + 5), body(kBig + 5));
  set_cur_mtime(key_mtime);
  {
    auto d = open_box();
    ASSERT_TRUE(d);
    ASSERT_EQ(d->messages().size(), kBig);
    std::set<std::string> got;
    for (const auto& m : d->messages()) got.insert(m.uidl);
    EXPECT_EQ(got.count(uidl_of(0)), 0u);
    EXPECT_EQ(got.count(uidl_of(kBig + 5)), 1u);
  }
}

TEST_F(MaildirCacheTest, DirtyCacheConfirmedOnASettledCurBecomesClean) {
  fill(kBig);
  age_cur();
  std::vector<std::string> first;
  {
    auto d = open_box();
    ASSERT_TRUE(d);
    first = uidls(*d);
  }
  // The same cache marked dirty (as an UPDATE writes it).
  std::string keep;
  auto v = cache_view(keep);
  ASSERT_TRUE(v && v->clean);
  write_file(cache(), encode_maildir_cache(v->cur, v->uidl_map, false, v->records()));
  {
    auto d = open_box();
    ASSERT_TRUE(d);
    EXPECT_EQ(uidls(*d), first);
  }
  std::string keep2;
  auto v2 = cache_view(keep2);
  ASSERT_TRUE(v2);
  EXPECT_TRUE(v2->clean);
  EXPECT_EQ(keep2, keep);
}

TEST_F(MaildirCacheTest, FileRemovedBehindTheCachesBackIsGoneAtRetr) {
  fill(kBig);
  age_cur();
  const timespec old = cur_mtime();
  ASSERT_TRUE(open_box());
  // Removed, and the directory's mtime forged back: the cache cannot know,
  // and the message behaves as one that vanished after the listing.
  fs::remove(cur() / name(7));
  set_cur_mtime(old);
  auto d = open_box();
  ASSERT_TRUE(d);
  ASSERT_EQ(d->messages().size(), kBig);
  auto src = d->open(7);
  ASSERT_FALSE(src.ok());
  EXPECT_EQ(src.error().code, Errc::not_found);
  EXPECT_TRUE(d->open(8).ok());
}

TEST_F(MaildirCacheTest, CorruptedOrForeignCacheIsIgnoredAndRebuilt) {
  fill(kBig);
  age_cur();
  ASSERT_TRUE(open_box());
  const std::string good = read_file(cache());
  for (const std::string& junk : {std::string("garbage"), good.substr(0, good.size() / 2),
                                  std::string(), std::string(good).replace(12, 1, "\x07")}) {
    write_file(cache(), junk);
    auto d = open_box();
    ASSERT_TRUE(d);
    ASSERT_EQ(d->messages().size(), kBig);
    d.reset();
    EXPECT_EQ(read_file(cache()), good);  // rebuilt (same key, same content)
  }
  // A cache that is not a regular file is ignored too.
  fs::remove(cache());
  fs::create_symlink("/etc/passwd", cache());
  auto d = open_box();
  ASSERT_TRUE(d);
  ASSERT_EQ(d->messages().size(), kBig);
}

TEST_F(MaildirCacheTest, UpdateRewritesTheCacheAndTheNextOpenAgrees) {
  fill(kBig + 10);
  age_cur();
  std::vector<std::string> before;
  {
    auto d = open_box();
    ASSERT_TRUE(d);
    before = uidls(*d);
    const std::vector<std::size_t> del = {0, 5, 9};
    ASSERT_TRUE(d->commit(del).ok());
  }
  std::string keep;
  auto v = cache_view(keep);
  ASSERT_TRUE(v);
  EXPECT_FALSE(v->clean);  // the survivors of a snapshot: always checked
  ASSERT_EQ(v->count, kBig + 7);
  std::vector<std::string> expected = before;
  for (const std::size_t i : {9, 5, 0}) expected.erase(expected.begin() + i);
  auto d = open_box();
  ASSERT_TRUE(d);
  EXPECT_EQ(uidls(*d), expected);
  d.reset();
  // A rebuild from the directory agrees.
  fs::remove(cache());
  d = open_box();
  EXPECT_EQ(uidls(*d), expected);
}

TEST_F(MaildirCacheTest, UpdateBelowTheThresholdRemovesTheCache) {
  fill(kBig);
  age_cur();
  auto d = open_box();
  ASSERT_TRUE(d);
  ASSERT_TRUE(fs::exists(cache()));
  const std::vector<std::size_t> del = {1};
  ASSERT_TRUE(d->commit(del).ok());
  EXPECT_FALSE(fs::exists(cache()));
}

TEST_F(MaildirCacheTest, UidlMapChangeInvalidatesTheCache) {
  fill(kBig);
  age_cur();
  ASSERT_TRUE(open_box());
  const std::string base = name(2).substr(0, name(2).find(':'));
  write_file(box() / "apop-uidl", base + " pinned-by-migration\n");
  auto d = open_box();
  ASSERT_TRUE(d);
  EXPECT_EQ(d->messages()[2].uidl, "pinned-by-migration");
  d.reset();
  // Appended to (the map only grows): seen again.
  {
    std::ofstream out(box() / "apop-uidl", std::ios::app);
    out << name(3).substr(0, name(3).find(':')) << " second-pin\n";
  }
  d = open_box();
  ASSERT_TRUE(d);
  EXPECT_EQ(d->messages()[2].uidl, "pinned-by-migration");
  EXPECT_EQ(d->messages()[3].uidl, "second-pin");
}

TEST_F(MaildirCacheTest, CachedSizesOfFilesWithoutWAreTheCountedOnes) {
  fill(kBig);
  write_file(cur() / "1600000000.V1I2.mx:2,", "a\nb\n");  // no W=: counted, 6 octets
  age_cur();
  ASSERT_TRUE(open_box());
  auto d = open_box();
  ASSERT_TRUE(d);
  ASSERT_EQ(d->messages().size(), kBig + 1);
  EXPECT_EQ(d->messages()[0].size, 6u);
}

}  // namespace
}  // namespace apop::store
