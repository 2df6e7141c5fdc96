// Test harness: a Session over the in-memory store and credential store,
// driven line by line with no sockets.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "auth/authenticator.hpp"
#include "auth/digest.hpp"
#include "auth/memory_credential_store.hpp"
#include "pop3/session.hpp"
#include "store/memory.hpp"

namespace apop::test {

inline constexpr const char* kTimestamp = "<1896.697170952@dbc.mtview.ca.us>";
inline constexpr const char* kSecret = "tanstaaf-but-longer";

struct RecordingSink final : pop3::EventSink {
  struct Entry {
    std::string user, mech;
    pop3::LoginResult result;
    std::string credential;
    pop3::AuthFailure failure = pop3::AuthFailure::none;
    bool tls = false;
  };
  std::vector<Entry> entries;
  void on_login(const pop3::LoginEvent& e) override {
    entries.push_back({std::string(e.user), std::string(e.mechanism), e.result,
                       std::string(e.credential), e.failure, e.tls});
  }
};

class Harness {
 public:
  explicit Harness(pop3::SessionConfig cfg = secure_config()) : cfg_(std::move(cfg)) {
    EXPECT_TRUE(creds.add("alice", kSecret).ok());
    EXPECT_TRUE(creds.add("bob", "bobs-long-secret").ok());
    session = make_session();
  }
  static pop3::SessionConfig secure_config() {
    pop3::SessionConfig c;
    c.secure = true;
    return c;
  }
  std::unique_ptr<pop3::Session> make_session(std::string ts = kTimestamp) {
    return std::make_unique<pop3::Session>(cfg_, auth, mail, std::move(ts), &sink);
  }

  // Feeds bytes and collects all output until the session needs input or closes.
  std::string send(std::string_view bytes) { return drive(*session, bytes); }
  std::string drive(pop3::Session& s, std::string_view bytes) {
    s.feed(bytes);
    std::string out;
    for (;;) {
      pop3::Next n = s.next(out);
      if (n == pop3::Next::verify) {
        // As the network driver does with SessionConfig::deferred_apop.
        const pop3::PendingCheck& c = *s.pending_check();
        s.complete_check(auth.verify_apop(c.user, c.timestamp, c.digest, c.context), out);
        continue;
      }
      if (n == pop3::Next::need_input) break;
      if (n == pop3::Next::close) {
        closed = true;
        break;
      }
    }
    return out;
  }
  std::string cmd(std::string_view line) { return send(std::string(line) + "\r\n"); }
  std::string apop_line(std::string_view user = "alice", std::string_view secret = kSecret) {
    return "APOP " + std::string(user) + " " +
           auth::md5_hex(std::string(kTimestamp) + std::string(secret));
  }
  void login() { ASSERT_EQ(cmd(apop_line()).substr(0, 3), "+OK"); }

  auth::MemoryCredentialStore creds;
  auth::StoreAuthenticator auth{creds};
  store::MemoryStore mail;
  RecordingSink sink;
  bool closed = false;
  pop3::SessionConfig cfg_;
  std::unique_ptr<pop3::Session> session;
};

}  // namespace apop::test
