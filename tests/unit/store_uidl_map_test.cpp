// UIDL compatibility (store/uidl_map.hpp): the apop-uidl map file, Dovecot's
// dovecot-uidlist and pop3_uidl_format, and MaildirOpener using pinned UIDLs.
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "store/maildir.hpp"
#include "store/uidl_map.hpp"
#include "temp_dir.hpp"

namespace apop::store {
namespace {

namespace fs = std::filesystem;

void write_file(const fs::path& p, const std::string& s) {
  std::ofstream(p, std::ios::binary) << s;
}

TEST(UidlMap, ParsesAndIgnoresBadAndTornLines) {
  auto m = parse_uidl_map(
      "# apop UIDL map\n"
      "1700000000.M1P2.host,S=10,W=12 UID-1\n"
      "1700000001.M1P2.host UID 2\n"  // space in UIDL: bad
      "bad/base UID-3\n"
      "noseparator\n"
      "a:2,S UID-4\n"  // ':' in base: bad
      "\n"
      "1700000000.M1P2.host,S=10,W=12 UID-5\n"  // later line wins
      "b " +
      std::string(71, 'u') +
      "\n"  // UIDL too long
      "torn UID-6");
  EXPECT_EQ(m.by_base.size(), 1u);
  EXPECT_EQ(m.by_base.at("1700000000.M1P2.host,S=10,W=12"), "UID-5");
  EXPECT_EQ(m.bad_lines, 6u);
}

TEST(UidlMap, AppendThenLoadRoundTrip) {
  test::TempDir d;
  ASSERT_TRUE(load_uidl_map(d.path())->by_base.empty());  // missing file
  ASSERT_TRUE(append_uidl_map(d.path(), {{"a,S=1", "X1"}, {"b", "X2"}}).ok());
  // A torn line left by a crash does not swallow the next entry.
  { std::ofstream(d.path() / "apop-uidl", std::ios::app) << "c half"; }
  ASSERT_TRUE(append_uidl_map(d.path(), {{"d", "X4"}}).ok());
  EXPECT_EQ(append_uidl_map(d.path(), {{"e", "bad uidl"}}).error().code, Errc::invalid);
  auto m = load_uidl_map(d.path());
  ASSERT_TRUE(m);
  EXPECT_EQ(m->by_base.size(), 4u);  // a, b, "c half" line, d
  EXPECT_EQ(m->by_base.at("d"), "X4");
  EXPECT_EQ(m->by_base.at("c"), "half");
}

TEST(DovecotUidlist, Version3WithExtensionsAndPop3Uidl) {
  auto l = parse_dovecot_uidlist(
      "3 V1275660208 N25022 G3085f01b7f11094c501100008c4a11c1\n"
      "25017 W2048 :1276528487.M364837P9451.kurkku,S=1355,W=1394:2,S\n"
      "25018 :1276528488.M1P1.host,S=5\n"
      "25020 W10 Pold-uidl-1 G0123 :1276528489.M2P1.host\n");
  ASSERT_TRUE(l) << l.error().message;
  EXPECT_EQ(l->version, 3u);
  EXPECT_EQ(l->uid_validity, 1275660208u);
  EXPECT_EQ(l->next_uid, 25022u);
  ASSERT_EQ(l->records.size(), 3u);
  EXPECT_EQ(l->records[0].uid, 25017u);
  EXPECT_EQ(l->records[0].base, "1276528487.M364837P9451.kurkku,S=1355,W=1394");
  EXPECT_FALSE(l->records[0].pop3_uidl);
  EXPECT_EQ(l->records[2].pop3_uidl.value_or(""), "old-uidl-1");
  EXPECT_EQ(l->records[2].base, "1276528489.M2P1.host");
}

TEST(DovecotUidlist, Version1) {
  auto l = parse_dovecot_uidlist("1 1000 5\n1 a.host\n4 b.host:2,\n");
  ASSERT_TRUE(l);
  EXPECT_EQ(l->records.size(), 2u);
  EXPECT_EQ(l->records[1].base, "b.host");
}

TEST(DovecotUidlist, CorruptFilesAreRefusedWithLine) {
  for (const char* bad : {"", "x V1 N2\n", "3 V0 N2\n", "3 N2\n", "2 V1 N2\n", "3 V1 N9\n0 :a\n",
                          "3 V1 N9\n2 :a\n1 :b\n", "3 V1 N9\n1 W1\n", "3 V1 N9\n1 :a/b\n",
                          "3 V1 N9\n1 :\n", "3 V1 N9\nx :a\n", "1 5\n", "3 V99999999999 N1\n"}) {
    SCOPED_TRACE(bad);
    auto l = parse_dovecot_uidlist(bad);
    ASSERT_FALSE(l.ok());
    EXPECT_EQ(l.error().code, Errc::invalid);
    EXPECT_NE(l.error().message.find("line"), std::string::npos);
  }
}

TEST(Pop3UidlFormat, DovecotDefaultAndVariants) {
  EXPECT_EQ(expand_pop3_uidl_format(kDovecotDefaultUidlFormat, 25017, 1275660208, "f").value(),
            "000061B94C0907B0");
  EXPECT_EQ(expand_pop3_uidl_format("%u", 7, 9, "f").value(), "7");
  EXPECT_EQ(expand_pop3_uidl_format("%v.%u", 7, 9, "f").value(), "9.7");
  EXPECT_EQ(expand_pop3_uidl_format("%08xu-%%-%f", 255, 9, "base").value(), "000000ff-%-base");
  EXPECT_EQ(expand_pop3_uidl_format("%{uidvalidity}:%{uid}", 1, 2, "f").value(), "2:1");
  for (const char* bad : {"%m", "%g", "%08Xm", "%", "%08", "%q", "%{nope}", "%{uid", "%Xf"}) {
    SCOPED_TRACE(bad);
    EXPECT_FALSE(expand_pop3_uidl_format(bad, 1, 1, "f").ok());
  }
}

TEST(MaildirPinnedUidl, MapOverridesDefaultAndNewMailGetsDefault) {
  test::TempDir root;
  const fs::path md = root.path() / "alice";
  ASSERT_TRUE(ensure_maildir(md).ok());
  write_file(md / "cur" / "1700000000.M1P1.old,S=5,W=6:2,S", "one\n\n");
  write_file(md / "new" / "1700000001.M1P1.old,S=5,W=6", "two\n\n");
  write_file(md / "new" / "1700000002.M1P1.new,S=5,W=6", "new\n\n");
  ASSERT_TRUE(append_uidl_map(md, {{"1700000000.M1P1.old,S=5,W=6", "000000010000AAAA"},
                                   {"1700000001.M1P1.old,S=5,W=6", "000000020000AAAA"},
                                   {"gone.M1P1.old", "000000030000AAAA"}})
                  .ok());
  MaildirOpener opener(root.path());
  auto drop = opener.open("alice");
  ASSERT_TRUE(drop) << drop.error().message;
  auto msgs = (*drop)->messages();
  ASSERT_EQ(msgs.size(), 3u);
  EXPECT_EQ(msgs[0].uidl, "000000010000AAAA");
  EXPECT_EQ(msgs[1].uidl, "000000020000AAAA");
  EXPECT_EQ(msgs[2].uidl, "1700000002.M1P1.new");
}

TEST(MaildirPinnedUidl, PinnedUidlWinsACollisionWithADefault) {
  test::TempDir root;
  const fs::path md = root.path() / "bob";
  ASSERT_TRUE(ensure_maildir(md).ok());
  // The earlier file's default UIDL equals the later file's pinned one.
  write_file(md / "cur" / "1600000000.M1P1.x:2,", "a\n");
  write_file(md / "cur" / "1700000000.M1P1.y:2,", "b\n");
  ASSERT_TRUE(append_uidl_map(md, {{"1700000000.M1P1.y", "1600000000.M1P1.x"}}).ok());
  MaildirOpener opener(root.path());
  auto drop = opener.open("bob");
  ASSERT_TRUE(drop);
  auto msgs = (*drop)->messages();
  ASSERT_EQ(msgs.size(), 2u);
  EXPECT_EQ(msgs[1].uidl, "1600000000.M1P1.x");
  EXPECT_NE(msgs[0].uidl, msgs[1].uidl);
}

TEST(MaildirPinnedUidl, UnreadableMapFailsTheOpenNotTheUidls) {
  test::TempDir root;
  const fs::path md = root.path() / "carol";
  ASSERT_TRUE(ensure_maildir(md).ok());
  fs::create_directory(md / "apop-uidl");  // not a file
  MaildirOpener opener(root.path());
  auto drop = opener.open("carol");
  ASSERT_FALSE(drop.ok());
  EXPECT_EQ(drop.error().code, Errc::temporary);
}

}  // namespace
}  // namespace apop::store
