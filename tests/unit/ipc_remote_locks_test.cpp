// The worker's shared maildrop locks (ipc::RemoteMaildropLocks behind a
// pop3::LockingOpener): taken and held by the auth process's AuthService
// over the channels, as in a network worker with a PostgreSQL account store
// (the database's locks are a fake here; tests/interop/test_scaleout.py runs
// the real ones).
#include "ipc/remote_maildrop_locks.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <chrono>
#include <string>
#include <thread>

#include "auth/authenticator.hpp"
#include "auth/digest.hpp"
#include "auth/memory_credential_store.hpp"
#include "ipc/auth_service.hpp"
#include "ipc_support.hpp"
#include "pop3/session.hpp"
#include "store/memory.hpp"

namespace apop::ipc {
namespace {

using namespace std::chrono_literals;
using test::FakeAuthenticator;
using test::kFakePassword;

const pop3::AuthContext kClear{false, "192.0.2.7"};

class IpcRemoteLocks : public ::testing::Test {
 protected:
  void SetUp() override {
    mail_.add_message("bob", "Subject: x\r\n\r\nx\r\n");
    mail_.add_message("carol", "Subject: y\r\n\r\ny\r\n");
  }
  FakeAuthenticator fake_;
  test::FakeMaildropLocks db_;
  AuthService service_{fake_, {}, &db_};
  test::ServedChannels served_{service_, 2};
  RemoteAuthenticator remote_{served_.worker_fds(), 5s};
  RemoteMaildropLocks locks_{remote_};
  store::MemoryStore mail_;
  pop3::LockingOpener opener_{locks_, mail_};
};

TEST_F(IpcRemoteLocks, HeldByTheAuthProcessForTheSession) {
  ASSERT_TRUE(remote_.verify_plain("bob", kFakePassword, kClear).ok);
  {
    auto md = opener_.open(pop3::MailboxAddress("bob"));
    ASSERT_TRUE(md.ok()) << md.error().message;
    EXPECT_EQ(db_.count("bob"), 1u);
    EXPECT_EQ(service_.maildrop_locks(), 1u);
    EXPECT_TRUE(mail_.locked("bob"));
  }
  // Given back (awaited) when the session's maildrop goes.
  EXPECT_FALSE(mail_.locked("bob"));
  EXPECT_EQ(db_.count("bob"), 0u);
  EXPECT_EQ(service_.maildrop_locks(), 0u);
}

TEST_F(IpcRemoteLocks, InUseElsewhereTemporaryWhenTheDatabaseIsDown) {
  db_.elsewhere.insert("bob");
  ASSERT_TRUE(remote_.verify_plain("bob", kFakePassword, kClear).ok);
  auto busy = opener_.open(pop3::MailboxAddress("bob"));
  ASSERT_FALSE(busy.ok());
  EXPECT_EQ(busy.error().code, Errc::in_use);
  EXPECT_FALSE(mail_.locked("bob"));
  db_.down = true;
  ASSERT_TRUE(remote_.verify_plain("carol", kFakePassword, kClear).ok);
  auto down = opener_.open(pop3::MailboxAddress("carol"));
  ASSERT_FALSE(down.ok());
  EXPECT_EQ(down.error().code, Errc::temporary);
  EXPECT_EQ(db_.total(), 0u);
}

TEST_F(IpcRemoteLocks, ARefusalIsTemporary) {
  // No login of carol through this worker: the auth process refuses.
  auto r = locks_.try_lock("carol");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::temporary);
  // An over-long name cannot be sent: temporary too.
  auto long_name = locks_.try_lock(std::string(kMaxUser + 1, 'u'));
  ASSERT_FALSE(long_name.ok());
  EXPECT_EQ(long_name.error().code, Errc::temporary);
  locks_.release("carol");  // refused by the auth process, ignored here
  EXPECT_EQ(remote_.live_channels(), 2u);
}

TEST_F(IpcRemoteLocks, DeadAuthProcessIsTemporary) {
  ASSERT_TRUE(remote_.verify_plain("bob", kFakePassword, kClear).ok);
  served_.stop();
  auto r = opener_.open(pop3::MailboxAddress("bob"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::temporary);
}

// A worker killed with sessions open: its channels close, and the auth
// process gives back what it held.
TEST_F(IpcRemoteLocks, AWorkerThatGoesAwayLeavesNothingLocked) {
  ASSERT_TRUE(remote_.verify_plain("bob", kFakePassword, kClear).ok);
  ASSERT_TRUE(remote_.verify_plain("carol", kFakePassword, kClear).ok);
  auto bob = opener_.open(pop3::MailboxAddress("bob"));
  auto carol = opener_.open(pop3::MailboxAddress("carol"));
  ASSERT_TRUE(bob.ok() && carol.ok());
  EXPECT_EQ(db_.total(), 2u);
  // The worker's ends close (its process is gone; the maildrops never
  // release: nothing runs in a killed process).
  remote_.replace_channels({});
  EXPECT_TRUE(ipc_test::eventually([&] { return served_.ends().size() == 2; }));
  EXPECT_EQ(db_.total(), 0u);
  // (Their release now finds no channel: ignored.)
}

// An answer of the wrong type to lock_maildrop: the channel is closed and
// the login fails as temporary.
TEST(IpcRemoteLocksWire, UnexpectedReplyIsTemporary) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd auth(sv[1]);
  std::vector<UniqueFd> fds;
  fds.emplace_back(sv[0]);
  std::thread fake_auth([&] {
    std::string buf(limits::kMaxIpcMessage, '\0');
    const ssize_t n = ::recv(auth.get(), buf.data(), buf.size(), 0);
    ASSERT_GT(n, 0);
    auto d = decode_request(std::string_view(buf.data(), static_cast<std::size_t>(n)));
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(std::get<LockMaildrop>(d->body).user, "bob");
    std::string out;
    ASSERT_TRUE(encode_reply(d->id, Ack{}, out).ok());
    ::send(auth.get(), out.data(), out.size(), MSG_NOSIGNAL);
  });
  RemoteAuthenticator remote(std::move(fds), 2s, std::vector<pop3::SaslMechanism>{});
  RemoteMaildropLocks locks(remote);
  auto r = locks.try_lock("bob");
  fake_auth.join();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::temporary);
  EXPECT_EQ(remote.live_channels(), 0u);
}

// pop3::Session, unchanged, over the worker's pieces: [IN-USE] and
// [SYS/TEMP] as in a single-process server, the lock given back at QUIT and
// when a session ends without it.
class IpcSessionLocks : public IpcRemoteLocks {
 protected:
  std::string drive(pop3::Session& s, std::string_view line) {
    s.feed(std::string(line) + "\r\n");
    std::string out;
    for (;;) {
      pop3::Next n = s.next(out);
      if (n == pop3::Next::need_input || n == pop3::Next::close) break;
    }
    return out;
  }
  pop3::SessionConfig cfg_;
};

TEST_F(IpcSessionLocks, InUseSysTempAndReleasedAtQuit) {
  cfg_.secure = true;
  {
    pop3::Session s(cfg_, remote_, opener_, "<1.2@host>", nullptr);
    drive(s, "USER bob");
    EXPECT_EQ(drive(s, "PASS " + std::string(kFakePassword)).substr(0, 3), "+OK");
    EXPECT_EQ(db_.count("bob"), 1u);
    EXPECT_EQ(drive(s, "QUIT").substr(0, 3), "+OK");
  }
  EXPECT_EQ(db_.count("bob"), 0u);
  db_.elsewhere.insert("bob");
  {
    pop3::Session s(cfg_, remote_, opener_, "<1.2@host>", nullptr);
    drive(s, "USER bob");
    EXPECT_EQ(drive(s, "PASS " + std::string(kFakePassword)).substr(0, 13), "-ERR [IN-USE]");
  }
  db_.down = true;
  {
    pop3::Session s(cfg_, remote_, opener_, "<1.2@host>", nullptr);
    drive(s, "USER carol");
    EXPECT_EQ(drive(s, "PASS " + std::string(kFakePassword)).substr(0, 15), "-ERR [SYS/TEMP]");
  }
  db_.down = false;
  {
    pop3::Session s(cfg_, remote_, opener_, "<1.2@host>", nullptr);
    drive(s, "USER carol");
    EXPECT_EQ(drive(s, "PASS " + std::string(kFakePassword)).substr(0, 3), "+OK");
    EXPECT_EQ(db_.count("carol"), 1u);
  }  // the connection dropped without QUIT
  EXPECT_EQ(db_.count("carol"), 0u);
  EXPECT_EQ(service_.maildrop_locks(), 0u);
}

}  // namespace
}  // namespace apop::ipc
