// parse_lmtp_listen and StoreLmtpDelivery (net/lmtp_server.hpp): the
// listener syntax, and delivery into real Maildir and mbox files.
#include "net/lmtp_server.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "temp_dir.hpp"

namespace apop::net {
namespace {

TEST(LmtpListen, UnixAndTcp) {
  auto u = parse_lmtp_listen("unix:/run/apop/lmtp");
  ASSERT_TRUE(u.ok());
  EXPECT_TRUE(u->is_unix());
  EXPECT_EQ(u->unix_path, "/run/apop/lmtp");
  auto t = parse_lmtp_listen("127.0.0.1:24");
  ASSERT_TRUE(t.ok());
  EXPECT_FALSE(t->is_unix());
  EXPECT_EQ(t->tcp.port, 24);
  EXPECT_FALSE(parse_lmtp_listen("unix:").ok());
  EXPECT_FALSE(parse_lmtp_listen("unix:/" + std::string(200, 'a')).ok());
  EXPECT_FALSE(parse_lmtp_listen("localhost").ok());
}

class StoreDeliveryTest : public ::testing::Test {
 protected:
  test::TempDir dir{"apop-lmtp"};
  std::map<std::string, StoreLmtpDelivery::Account> accounts;
  StoreLmtpDelivery delivery{
      [this](std::string_view user) {
        auto it = accounts.find(std::string(user));
        return it == accounts.end() ? StoreLmtpDelivery::Account{} : it->second;
      },
      store::parse_mail_location("maildir:%d/mail/%u", true).value(), dir.path()};

  std::vector<std::string> new_files(const std::string& user) {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(dir.path() / "mail" / user / "new")) {
      out.push_back(test::slurp(e.path()));
    }
    return out;
  }
};

TEST_F(StoreDeliveryTest, MaildirDeliveryAndLookups) {
  accounts["alice"] = {LmtpRecipient::ok, std::nullopt};
  accounts["down"] = {LmtpRecipient::temporary, std::nullopt};
  EXPECT_EQ(delivery.recipient("alice", 0), LmtpRecipient::ok);
  EXPECT_EQ(delivery.recipient("ghost", 0), LmtpRecipient::unknown);
  EXPECT_EQ(delivery.recipient("down", 0), LmtpRecipient::temporary);
  ASSERT_TRUE(delivery.deliver("alice", "s@x", "Subject: a\n\nbody\n").ok());
  EXPECT_EQ(new_files("alice"), std::vector<std::string>{"Subject: a\n\nbody\n"});
  auto gone = delivery.deliver("ghost", "s@x", "x\n");
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code, Errc::permanent);
  auto down = delivery.deliver("down", "s@x", "x\n");
  ASSERT_FALSE(down.ok());
  EXPECT_EQ(down.error().code, Errc::temporary);
}

TEST_F(StoreDeliveryTest, AccountsOwnMboxLocationWins) {
  const auto mbox = dir.path() / "alice.mbox";
  accounts["alice"] = {LmtpRecipient::ok, "mbox:" + mbox.string()};
  ASSERT_TRUE(delivery.deliver("alice", "s@example.org", "Subject: m\n\nFrom me\n").ok());
  const std::string data = test::slurp(mbox);
  EXPECT_EQ(data.rfind("From s@example.org ", 0), 0u) << data;
  EXPECT_NE(data.find("\n>From me\n"), std::string::npos) << data;
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "mail" / "alice"));
}

TEST_F(StoreDeliveryTest, UnwritableMaildirIsTemporary) {
  accounts["alice"] = {LmtpRecipient::ok, std::nullopt};
  std::filesystem::create_directories(dir.path() / "mail");
  std::ofstream(dir.path() / "mail" / "alice") << "a file, not a Maildir";
  auto r = delivery.deliver("alice", "", "x\n");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::temporary);
}

TEST_F(StoreDeliveryTest, QuotaAtRcptAndAfterData) {
  accounts["alice"] = {LmtpRecipient::ok, std::nullopt, store::QuotaLimits{100, 0}};
  // No Maildir yet: room for anything up to the limit.
  EXPECT_EQ(delivery.recipient("alice", 60), LmtpRecipient::ok);
  EXPECT_EQ(delivery.recipient("alice", 101), LmtpRecipient::over_quota);  // SIZE= too big
  ASSERT_TRUE(delivery.deliver("alice", "s@x", std::string(59, 'a') + "\n").ok());
  EXPECT_EQ(delivery.recipient("alice", 0), LmtpRecipient::ok);
  EXPECT_EQ(delivery.recipient("alice", 41), LmtpRecipient::over_quota);
  // After DATA the real check, under the lock.
  auto full = delivery.deliver("alice", "s@x", std::string(49, 'b') + "\n");
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.error().code, Errc::over_quota);
  EXPECT_EQ(new_files("alice").size(), 1u);
  EXPECT_EQ(delivery.quota_rejections(), 3u);
}

TEST_F(StoreDeliveryTest, MboxQuotaAfterData) {
  const auto mbox = dir.path() / "alice.mbox";
  accounts["alice"] = {LmtpRecipient::ok, "mbox:" + mbox.string(), store::QuotaLimits{0, 1}};
  ASSERT_TRUE(delivery.deliver("alice", "s@x", "Subject: 1\n\nx\n").ok());
  EXPECT_EQ(delivery.recipient("alice", 0), LmtpRecipient::over_quota);
  auto full = delivery.deliver("alice", "s@x", "Subject: 2\n\nx\n");
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.error().code, Errc::over_quota);
}

}  // namespace
}  // namespace apop::net
