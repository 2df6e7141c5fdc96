// net::Metrics: names, labels and values of the exposition (the interface
// dashboards depend on), and the HTTP endpoint on a free port.
#include "net/metrics.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "net/server.hpp"

namespace apop::net {
namespace {

bool has_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos || text.rfind(line + "\n", 0) == 0;
}

TEST(NetMetrics, ListenerSeriesAndSessionEnd) {
  Metrics m;
  auto& l = m.add_listener("127.0.0.1:110", false);
  auto& t = m.add_listener("[::1]:995", true);
  m.connection_opened(l);
  m.connection_opened(l);
  m.connection_closed(l);
  m.connection_opened(t);
  m.session_started(l);
  m.bytes_sent(l, 100);
  m.bytes_sent(l, 23);
  std::string s = m.scrape();
  EXPECT_TRUE(has_line(s, R"(apop_connections_total{listener="127.0.0.1:110",tls="0"} 2)")) << s;
  EXPECT_TRUE(has_line(s, R"(apop_connections_active{listener="127.0.0.1:110",tls="0"} 1)")) << s;
  EXPECT_TRUE(has_line(s, R"(apop_connections_total{listener="[::1]:995",tls="1"} 1)")) << s;
  EXPECT_TRUE(has_line(s, R"(apop_sessions_total{listener="127.0.0.1:110",tls="0"} 1)")) << s;
  EXPECT_TRUE(has_line(s, R"(apop_sessions_active{listener="127.0.0.1:110",tls="0"} 1)")) << s;
  EXPECT_TRUE(has_line(s, R"(apop_sent_bytes_total{listener="127.0.0.1:110",tls="0"} 123)")) << s;
  EXPECT_TRUE(has_line(s, R"(apop_session_duration_seconds_count 0)")) << s;

  pop3::SessionStats st;
  st.retr = 2;
  st.retr_bytes = 5120;
  st.top = 1;
  st.deleted = 3;
  m.session_ended(l, st, std::chrono::milliseconds(700));
  s = m.scrape();
  EXPECT_TRUE(has_line(s, R"(apop_sessions_active{listener="127.0.0.1:110",tls="0"} 0)")) << s;
  EXPECT_TRUE(has_line(s, R"(apop_commands_total{command="RETR"} 2)")) << s;
  EXPECT_TRUE(has_line(s, R"(apop_commands_total{command="TOP"} 1)")) << s;
  EXPECT_TRUE(has_line(s, R"(apop_commands_total{command="DELE"} 3)")) << s;
  EXPECT_TRUE(has_line(s, R"(apop_retr_bytes_total 5120)")) << s;
  EXPECT_TRUE(has_line(s, R"(apop_session_duration_seconds_count 1)")) << s;
  EXPECT_TRUE(has_line(s, R"(apop_session_duration_seconds_bucket{le="0.5"} 0)")) << s;
  EXPECT_TRUE(has_line(s, R"(apop_session_duration_seconds_bucket{le="1"} 1)")) << s;
}

TEST(NetMetrics, LoginResultsAndBoundedMechanisms) {
  pop3::LoginEvent e;
  e.result = pop3::LoginResult::ok;
  EXPECT_EQ(Metrics::login_result(e), "ok");
  e.result = pop3::LoginResult::in_use;
  EXPECT_EQ(Metrics::login_result(e), "in-use");
  e.result = pop3::LoginResult::error;
  EXPECT_EQ(Metrics::login_result(e), "error");
  e.result = pop3::LoginResult::delayed;
  EXPECT_EQ(Metrics::login_result(e), "login-delay");
  e.result = pop3::LoginResult::failed;
  using pop3::AuthFailure;
  for (auto [failure, want] :
       {std::pair<AuthFailure, std::string_view>{AuthFailure::credentials, "failed"},
        {AuthFailure::none, "failed"},
        {AuthFailure::policy_tls, "policy"},
        {AuthFailure::policy_mechanism, "policy"},
        {AuthFailure::policy_imported_hash, "policy"},
        {AuthFailure::no_apop_secret, "no-apop-secret"},
        {AuthFailure::throttled, "throttled"},
        {AuthFailure::blocked, "blocked"}}) {
    e.failure = failure;
    EXPECT_EQ(Metrics::login_result(e), want) << pop3::auth_failure_name(failure);
  }

  Metrics m;
  m.login("APOP", "ok");
  m.login("APOP", "failed");
  m.login("APOP", "failed");
  m.login("SCRAM-SHA-256", "throttled");
  m.login("X-EVIL-{\"}", "failed");
  std::string s = m.scrape();
  EXPECT_TRUE(has_line(s, R"(apop_logins_total{mech="APOP",result="ok"} 1)")) << s;
  EXPECT_TRUE(has_line(s, R"(apop_logins_total{mech="APOP",result="failed"} 2)")) << s;
  EXPECT_TRUE(has_line(s, R"(apop_logins_total{mech="SCRAM-SHA-256",result="throttled"} 1)")) << s;
  EXPECT_TRUE(has_line(s, R"(apop_logins_total{mech="other",result="failed"} 1)")) << s;
  EXPECT_EQ(s.find("X-EVIL"), std::string::npos);
}

// GET /metrics over a real socket on a free loopback port.
TEST(NetMetrics, ExposeOnFreePort) {
  Metrics m;
  m.login("USER", "ok");
  auto where = m.expose(ListenSpec{"127.0.0.1", 0});
  ASSERT_TRUE(where.ok()) << where.error().message;
  ASSERT_EQ(where->rfind("127.0.0.1:", 0), 0u) << *where;
  const int port = std::stoi(where->substr(10));
  ASSERT_GT(port, 0);
  EXPECT_FALSE(m.expose(ListenSpec{"127.0.0.1", 0}).ok());  // at most once

  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<std::uint16_t>(port));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  const std::string req = "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n";
  ASSERT_EQ(::write(fd, req.data(), req.size()), static_cast<ssize_t>(req.size()));
  std::string resp;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;)
    resp.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  EXPECT_EQ(resp.rfind("HTTP/1.", 0), 0u) << resp;
  EXPECT_NE(resp.find(" 200 "), std::string::npos) << resp;
  EXPECT_NE(resp.find(R"(apop_logins_total{mech="USER",result="ok"} 1)"), std::string::npos)
      << resp;
}

TEST(NetMetrics, ExposeOnTakenPortIsAnError) {
  Metrics a;
  auto where = a.expose(ListenSpec{"127.0.0.1", 0});
  ASSERT_TRUE(where.ok()) << where.error().message;
  const auto port = static_cast<std::uint16_t>(std::stoi(where->substr(10)));
  Metrics b;
  auto again = b.expose(ListenSpec{"127.0.0.1", port});
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, Errc::temporary);
  EXPECT_NE(again.error().message.find("cannot serve metrics on 127.0.0.1:"), std::string::npos)
      << again.error().message;
}

}  // namespace
}  // namespace apop::net
