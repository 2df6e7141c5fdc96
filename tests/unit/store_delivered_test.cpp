// MessageInfo::delivered (RFC 2449 EXPIRE ages) from Maildir mtimes and the
// in-memory store.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utime.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "store/maildir.hpp"
#include "store/memory.hpp"
#include "temp_dir.hpp"

namespace apop::store {
namespace {

namespace fs = std::filesystem;

using TempDir = ::apop::test::TempDir;

void write_with_mtime(const fs::path& p, const std::string& body, std::int64_t mtime) {
  std::ofstream(p, std::ios::binary) << body;
  struct utimbuf t {};
  t.actime = static_cast<time_t>(mtime);
  t.modtime = static_cast<time_t>(mtime);
  ASSERT_EQ(::utime(p.c_str(), &t), 0);
}

TEST(StoreDelivered, MaildirUsesTheFileMtimeInNewAndCur) {
  TempDir dir;
  const fs::path box = dir.path() / "alice";
  ASSERT_TRUE(ensure_maildir(box).ok());
  // The name's time says 2023; the mtime (as Dovecot reads it) wins.
  write_with_mtime(box / "new" / "1700000000.M1P1.host", "a\n", 1'000'000'000);
  write_with_mtime(box / "cur" / "1700000001.M2P1.host:2,S", "b\n", 1'100'000'000);
  MaildirOpener opener(dir.path());
  auto md = opener.open("alice");
  ASSERT_TRUE(md.ok()) << md.error().message;
  auto msgs = (*md)->messages();
  ASSERT_EQ(msgs.size(), 2u);
  EXPECT_EQ(msgs[0].delivered, 0);  // the listing does not stat
  (*md)->load_delivery_times();
  EXPECT_EQ(msgs[0].delivered, 1'000'000'000);  // kept by the new/ -> cur/ move
  EXPECT_EQ(msgs[1].delivered, 1'100'000'000);
}

TEST(StoreDelivered, DeliverStampsTheCurrentTime) {
  TempDir dir;
  const fs::path box = dir.path() / "bob";
  ASSERT_TRUE(ensure_maildir(box).ok());
  const fs::path msg = dir.path() / "in.eml";
  std::ofstream(msg) << "Subject: x\n\nbody\n";
  const std::int64_t before = static_cast<std::int64_t>(::time(nullptr));
  {
    FILE* f = std::fopen(msg.c_str(), "rb");
    ASSERT_NE(f, nullptr);
    ASSERT_TRUE(deliver(box, ::fileno(f), DeliverOptions{}).ok());
    std::fclose(f);
  }
  MaildirOpener opener(dir.path());
  auto md = opener.open("bob");
  ASSERT_TRUE(md.ok());
  ASSERT_EQ((*md)->messages().size(), 1u);
  (*md)->load_delivery_times();
  EXPECT_GE((*md)->messages()[0].delivered, before - 1);
  EXPECT_LE((*md)->messages()[0].delivered, static_cast<std::int64_t>(::time(nullptr)) + 1);
}

TEST(StoreDelivered, MaildirFollowsAFlagRenameAndGivesUpOnAVanishedFile) {
  TempDir dir;
  const fs::path box = dir.path() / "dave";
  ASSERT_TRUE(ensure_maildir(box).ok());
  write_with_mtime(box / "cur" / "1700000000.M1P1.host:2,", "a\n", 1'000'000'000);
  write_with_mtime(box / "cur" / "1700000001.M2P1.host:2,", "b\n", 1'100'000'000);
  write_with_mtime(box / "cur" / "1700000002.M3P1.host:2,", "c\n", 1'200'000'000);
  MaildirOpener opener(dir.path());
  auto md = opener.open("dave");
  ASSERT_TRUE(md.ok());
  // After the listing: another client flags one message and removes another.
  fs::rename(box / "cur" / "1700000000.M1P1.host:2,", box / "cur" / "1700000000.M1P1.host:2,S");
  fs::remove(box / "cur" / "1700000001.M2P1.host:2,");
  (*md)->load_delivery_times();
  auto msgs = (*md)->messages();
  ASSERT_EQ(msgs.size(), 3u);
  EXPECT_EQ(msgs[0].delivered, 1'000'000'000);  // found under its new name (mtime kept)
  EXPECT_EQ(msgs[1].delivered, 0);              // gone: unknown age, never expires
  EXPECT_EQ(msgs[2].delivered, 1'200'000'000);
  (*md)->load_delivery_times();  // idempotent
  EXPECT_EQ(msgs[0].delivered, 1'000'000'000);
}

TEST(StoreDelivered, MemoryStoreReportsWhatItWasGiven) {
  MemoryStore mem;
  mem.add_message("carol", "x\r\n", 12345);
  mem.add_message("carol", "y\r\n");
  auto md = mem.open("carol");
  ASSERT_TRUE(md.ok());
  EXPECT_EQ((*md)->messages()[0].delivered, 12345);
  EXPECT_EQ((*md)->messages()[1].delivered, 0);  // unknown
}

}  // namespace
}  // namespace apop::store
