// pop3::Session, unchanged, over the worker's RemoteAuthenticator: logins
// cross a SOCK_SEQPACKET channel to an AuthService over the real
// StoreAuthenticator, as in a network worker.
#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "auth/authenticator.hpp"
#include "auth/base64.hpp"
#include "auth/digest.hpp"
#include "auth/memory_credential_store.hpp"
#include "ipc/auth_service.hpp"
#include "ipc/remote_authenticator.hpp"
#include "ipc_support.hpp"
#include "pop3/session.hpp"
#include "store/memory.hpp"

namespace apop::ipc {
namespace {

using namespace std::chrono_literals;

constexpr const char* kTs = "<1896.697170952@dbc.mtview.ca.us>";
constexpr const char* kSecret = "tanstaaf-but-longer";

class IpcSession : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(creds_.add("alice", kSecret).ok());
    mail_.add_message("alice", "Subject: hi\r\n\r\nbody\r\n");
    cfg_.secure = true;
  }
  std::string drive(pop3::Session& s, std::string_view line) {
    s.feed(std::string(line) + "\r\n");
    std::string out;
    for (;;) {
      pop3::Next n = s.next(out);
      if (n == pop3::Next::need_input || n == pop3::Next::close) break;
    }
    return out;
  }
  std::string apop(std::string_view secret) {
    return "APOP alice " + auth::md5_hex(std::string(kTs) + std::string(secret));
  }

  auth::MemoryCredentialStore creds_;
  auth::StoreAuthenticator real_{creds_};
  AuthService service_{real_};
  test::ServedChannels served_{service_, 2};
  RemoteAuthenticator remote_{served_.worker_fds(), 5s};
  bool flusher_ = (remote_.start_flusher(), true);
  store::MemoryStore mail_;
  pop3::SessionConfig cfg_;
};

TEST_F(IpcSession, ApopLoginAndWrongSecret) {
  pop3::Session bad(cfg_, remote_, mail_, kTs, nullptr);
  EXPECT_EQ(drive(bad, apop("wrong")).substr(0, 11), "-ERR [AUTH]");
  pop3::Session s(cfg_, remote_, mail_, kTs, nullptr);
  EXPECT_EQ(drive(s, apop(kSecret)).substr(0, 3), "+OK");
  EXPECT_EQ(drive(s, "STAT").substr(0, 5), "+OK 1");
  // The login was recorded through the auth process.
  EXPECT_TRUE(ipc_test::eventually(
      [&] { return creds_.account("alice").ok() && creds_.account("alice")->last_login; }));
}

TEST_F(IpcSession, SaslPlainAndCapa) {
  pop3::Session s(cfg_, remote_, mail_, kTs, nullptr);
  EXPECT_NE(drive(s, "CAPA").find("SASL SCRAM-SHA-256"), std::string::npos);
  const std::string plain = auth::base64_encode(std::string("\0alice\0", 7) + kSecret);
  EXPECT_EQ(drive(s, "AUTH PLAIN " + plain).substr(0, 3), "+OK");
}

TEST_F(IpcSession, DeadAuthProcessIsSysTemp) {
  served_.stop();
  pop3::Session s(cfg_, remote_, mail_, kTs, nullptr);
  EXPECT_EQ(drive(s, apop(kSecret)).substr(0, 15), "-ERR [SYS/TEMP]");
}

}  // namespace
}  // namespace apop::ipc
