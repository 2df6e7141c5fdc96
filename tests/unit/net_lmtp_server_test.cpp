// parse_lmtp_listen and StoreLmtpDelivery (net/lmtp_server.hpp): the
// listener syntax, and delivery into real Maildir and mbox files.
#include "net/lmtp_server.hpp"

#include <gtest/gtest.h>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <string>
#include <thread>
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
  ASSERT_TRUE(delivery.deliver("alice", "s@x", "", "Subject: a\n\nbody\n").ok());
  EXPECT_EQ(new_files("alice"), std::vector<std::string>{"Subject: a\n\nbody\n"});
  auto gone = delivery.deliver("ghost", "s@x", "", "x\n");
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code, Errc::permanent);
  auto down = delivery.deliver("down", "s@x", "", "x\n");
  ASSERT_FALSE(down.ok());
  EXPECT_EQ(down.error().code, Errc::temporary);
}

// The Maildir is made at the first delivery and repaired when a part of it
// is gone; the trace block and the message are stored as one file.
TEST_F(StoreDeliveryTest, MaildirMadeOnDemandAndRepaired) {
  accounts["alice"] = {LmtpRecipient::ok, std::nullopt};
  const auto box = dir.path() / "mail" / "alice";
  EXPECT_FALSE(std::filesystem::exists(box));
  const std::string trace = "Return-Path: <s@x>\nReceived: by test\n";
  ASSERT_TRUE(delivery.deliver("alice", "s@x", trace, "Subject: 1\n\nx\r\n").ok());
  EXPECT_TRUE(std::filesystem::is_directory(box / "cur"));
  std::filesystem::remove_all(box / "tmp");
  ASSERT_TRUE(delivery.deliver("alice", "s@x", trace, "Subject: 1\n\nx\r\n").ok());
  EXPECT_TRUE(std::filesystem::is_directory(box / "tmp"));
  EXPECT_EQ(new_files("alice"), std::vector<std::string>(2, trace + "Subject: 1\n\nx\r\n"));
}

TEST_F(StoreDeliveryTest, AccountsOwnMboxLocationWins) {
  const auto mbox = dir.path() / "alice.mbox";
  accounts["alice"] = {LmtpRecipient::ok, "mbox:" + mbox.string()};
  ASSERT_TRUE(delivery.deliver("alice", "s@example.org", "", "Subject: m\n\nFrom me\n").ok());
  const std::string data = test::slurp(mbox);
  EXPECT_EQ(data.rfind("From s@example.org ", 0), 0u) << data;
  EXPECT_NE(data.find("\n>From me\n"), std::string::npos) << data;
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "mail" / "alice"));
}

TEST_F(StoreDeliveryTest, UnwritableMaildirIsTemporary) {
  accounts["alice"] = {LmtpRecipient::ok, std::nullopt};
  std::filesystem::create_directories(dir.path() / "mail");
  std::ofstream(dir.path() / "mail" / "alice") << "a file, not a Maildir";
  auto r = delivery.deliver("alice", "", "", "x\n");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::temporary);
}

// RCPT and the delivery after DATA cost one lookup; unknown and temporary
// answers are asked again; a found account is asked again after the TTL.
TEST(StoreDeliveryCache, OneLookupPerRecipientAndMessageWithinTheTtl) {
  test::TempDir dir{"apop-lmtp-cache"};
  std::map<std::string, int> asked;
  std::map<std::string, StoreLmtpDelivery::Account> accounts;
  accounts["alice"] = {LmtpRecipient::ok, std::nullopt};
  accounts["down"] = {LmtpRecipient::temporary, std::nullopt};
  StoreLmtpDelivery delivery(
      [&](std::string_view user) {
        ++asked[std::string(user)];
        auto it = accounts.find(std::string(user));
        return it == accounts.end() ? StoreLmtpDelivery::Account{} : it->second;
      },
      store::parse_mail_location("maildir:%d/mail/%u", true).value(), dir.path());
  EXPECT_EQ(delivery.recipient("alice", 0), LmtpRecipient::ok);
  ASSERT_TRUE(delivery.deliver("alice", "s@x", "", "m1\n").ok());
  EXPECT_EQ(delivery.recipient("alice", 0), LmtpRecipient::ok);
  ASSERT_TRUE(delivery.deliver("alice", "s@x", "", "m2\n").ok());
  EXPECT_EQ(asked["alice"], 1);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(delivery.recipient("ghost", 0), LmtpRecipient::unknown);
    EXPECT_EQ(delivery.recipient("down", 0), LmtpRecipient::temporary);
  }
  EXPECT_EQ(asked["ghost"], 2);
  EXPECT_EQ(asked["down"], 2);
  // Deleted meanwhile: seen once the cached answer is older than the TTL.
  accounts.erase("alice");
  std::this_thread::sleep_for(limits::kLmtpLookupCacheTtl + std::chrono::milliseconds(50));
  EXPECT_EQ(delivery.recipient("alice", 0), LmtpRecipient::unknown);
  EXPECT_EQ(asked["alice"], 2);
}

// A delivery that holds every caller until `want` deliveries run at once
// (or a deadline passes), recording the most seen together.
class GateDelivery final : public LmtpDelivery {
 public:
  explicit GateDelivery(unsigned want) : want_(want) {}
  LmtpRecipient recipient(std::string_view, std::uint64_t) override { return LmtpRecipient::ok; }
  Result<void> deliver(std::string_view, std::string_view, std::string_view,
                       std::string_view) override {
    std::unique_lock lock(mu_);
    max_ = std::max(max_, ++inside_);
    cv_.notify_all();
    cv_.wait_for(lock, std::chrono::seconds(5), [this] { return max_ >= want_; });
    --inside_;
    return {};
  }
  unsigned max_seen() {
    std::lock_guard lock(mu_);
    return max_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  unsigned want_;
  unsigned inside_ = 0, max_ = 0;
};

int connect_unix(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Reads until `count` CRLF-terminated lines have arrived.
std::string read_lines(int fd, int count) {
  std::string got;
  char buf[512];
  while (std::count(got.begin(), got.end(), '\n') < count) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    got.append(buf, static_cast<std::size_t>(n));
  }
  return got;
}

// Bound apart from the server (as the master does with workers), then
// adopted: the socket has its mode, and `threads` connections deliver at
// once -- each delivery blocks only its own thread.
TEST(LmtpServerThreads, BoundThenAdoptedServesDeliveriesInParallel) {
  test::TempDir dir{"apop-lmtp-threads"};
  const std::string path = (dir.path() / "lmtp.sock").string();
  LmtpServerOptions opts;
  opts.listen.push_back(parse_lmtp_listen("unix:" + path).value());
  opts.socket_mode = 0600;
  opts.threads = 3;
  auto bound = bind_lmtp_listeners(opts);
  ASSERT_TRUE(bound.ok()) << bound.error().message;
  ASSERT_EQ(bound->size(), 1u);
  EXPECT_TRUE((*bound)[0].unix_socket);
  EXPECT_EQ((*bound)[0].where, "unix:" + path);
  struct stat st {};
  ASSERT_EQ(::lstat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  GateDelivery gate(3);
  LmtpServer server(opts, gate);
  ASSERT_TRUE(server.adopt(std::move(*bound)).ok());
  server.start();
  std::vector<std::thread> clients;
  std::vector<std::string> replies(3);
  for (int i = 0; i < 3; ++i) {
    clients.emplace_back([&, i] {
      const int fd = connect_unix(path);
      ASSERT_GE(fd, 0);
      const std::string cmds = "LHLO t\r\nMAIL FROM:<s@x>\r\nRCPT TO:<a@x>\r\nDATA\r\n";
      ASSERT_EQ(::write(fd, cmds.data(), cmds.size()), static_cast<ssize_t>(cmds.size()));
      read_lines(fd, 1 + 5 + 3);  // greeting, LHLO (5 lines), MAIL, RCPT, DATA
      const std::string data = "Subject: x\r\n\r\nx\r\n.\r\n";
      ASSERT_EQ(::write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
      replies[static_cast<std::size_t>(i)] = read_lines(fd, 1);
      ::close(fd);
    });
  }
  for (auto& t : clients) t.join();
  server.stop();
  // All three were inside deliver() together (one thread would see 1 and
  // each caller would wait out the 5 s deadline).
  EXPECT_EQ(gate.max_seen(), 3u);
  for (const auto& r : replies) EXPECT_EQ(r.substr(0, 4), "250 ") << r;
}

TEST_F(StoreDeliveryTest, QuotaAtRcptAndAfterData) {
  accounts["alice"] = {LmtpRecipient::ok, std::nullopt, store::QuotaLimits{100, 0}};
  // No Maildir yet: room for anything up to the limit.
  EXPECT_EQ(delivery.recipient("alice", 60), LmtpRecipient::ok);
  EXPECT_EQ(delivery.recipient("alice", 101), LmtpRecipient::over_quota);  // SIZE= too big
  ASSERT_TRUE(delivery.deliver("alice", "s@x", "", std::string(59, 'a') + "\n").ok());
  EXPECT_EQ(delivery.recipient("alice", 0), LmtpRecipient::ok);
  EXPECT_EQ(delivery.recipient("alice", 41), LmtpRecipient::over_quota);
  // After DATA the real check, under the lock.
  auto full = delivery.deliver("alice", "s@x", "", std::string(49, 'b') + "\n");
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.error().code, Errc::over_quota);
  EXPECT_EQ(new_files("alice").size(), 1u);
  EXPECT_EQ(delivery.quota_rejections(), 3u);
}

TEST_F(StoreDeliveryTest, MboxQuotaAfterData) {
  const auto mbox = dir.path() / "alice.mbox";
  accounts["alice"] = {LmtpRecipient::ok, "mbox:" + mbox.string(), store::QuotaLimits{0, 1}};
  ASSERT_TRUE(delivery.deliver("alice", "s@x", "", "Subject: 1\n\nx\n").ok());
  EXPECT_EQ(delivery.recipient("alice", 0), LmtpRecipient::over_quota);
  auto full = delivery.deliver("alice", "s@x", "", "Subject: 2\n\nx\n");
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.error().code, Errc::over_quota);
}

}  // namespace
}  // namespace apop::net
