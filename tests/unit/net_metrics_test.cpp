// net::Metrics: names, labels and values of the exposition (the interface
// dashboards depend on), and the HTTP endpoint on a free port.
#include "net/metrics.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <string>
#include <vector>

#include "net/server.hpp"

namespace apop::net {
namespace {

bool has_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos || text.rfind(line + "\n", 0) == 0;
}

TEST(NetMetrics, ListenerSeriesAndSessionEnd) {
  Metrics m;
  auto la = m.add_listener("127.0.0.1:110", false);
  auto ta = m.add_listener("[::1]:995", true);
  ASSERT_TRUE(la.ok() && ta.ok());
  auto& l = **la;
  auto& t = **ta;
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

TEST(NetMetrics, QuotaRejectionsByPath) {
  Metrics m;
  std::string s = m.scrape();
  EXPECT_TRUE(has_line(s, R"(apop_quota_rejections_total{path="lmtp"} 0)")) << s;
  m.quota_rejection();
  m.quota_rejection();
  s = m.scrape();
  EXPECT_TRUE(has_line(s, R"(apop_quota_rejections_total{path="lmtp"} 2)")) << s;
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

// The workers of a multi-process server count in rows of one shared
// mapping; the exposition sums them. Here the rows are written by forked
// children, as workers do.
TEST(NetMetrics, SharedTableSumsEveryProcesssRow) {
  auto table = MetricsTable::create(3);
  ASSERT_TRUE(table.ok()) << table.error().message;
  std::vector<pid_t> kids;
  for (unsigned row = 0; row < 3; ++row) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      Metrics m;
      m.share(*table, row);
      auto l = m.add_listener("127.0.0.1:110", false);
      if (!l.ok()) ::_exit(1);
      for (unsigned i = 0; i <= row; ++i) {
        m.connection_opened(**l);
        m.session_started(**l);
        m.login("APOP", "ok");
      }
      pop3::SessionStats st;
      st.retr = 1;
      m.session_ended(**l, st, std::chrono::seconds(2));
      ::_exit(0);
    }
    kids.push_back(pid);
  }
  for (pid_t pid : kids) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  const std::vector<MetricsListenerLabel> labels{{"127.0.0.1:110", false}};
  std::string s = render_metrics(**table, labels);
  EXPECT_TRUE(has_line(s, R"(apop_connections_total{listener="127.0.0.1:110",tls="0"} 6)")) << s;
  EXPECT_TRUE(has_line(s, R"(apop_connections_active{listener="127.0.0.1:110",tls="0"} 6)")) << s;
  EXPECT_TRUE(has_line(s, R"(apop_sessions_active{listener="127.0.0.1:110",tls="0"} 3)")) << s;
  EXPECT_TRUE(has_line(s, R"(apop_logins_total{mech="APOP",result="ok"} 6)")) << s;
  EXPECT_TRUE(has_line(s, R"(apop_commands_total{command="RETR"} 3)")) << s;
  EXPECT_TRUE(has_line(s, R"(apop_session_duration_seconds_bucket{le="2.5"} 3)")) << s;
  EXPECT_TRUE(has_line(s, R"(apop_session_duration_seconds_bucket{le="1"} 0)")) << s;
  EXPECT_TRUE(has_line(s, R"(apop_session_duration_seconds_sum 6)")) << s;

  // A dead worker's open connections and sessions stop counting; what it
  // counted stays (counters never go down).
  (*table)->reset_gauges(2);
  s = render_metrics(**table, labels);
  EXPECT_TRUE(has_line(s, R"(apop_connections_active{listener="127.0.0.1:110",tls="0"} 3)")) << s;
  EXPECT_TRUE(has_line(s, R"(apop_sessions_active{listener="127.0.0.1:110",tls="0"} 1)")) << s;
  EXPECT_TRUE(has_line(s, R"(apop_connections_total{listener="127.0.0.1:110",tls="0"} 6)")) << s;
}

TEST(NetMetrics, ListenerSlotsAreBounded) {
  Metrics m;
  for (unsigned i = 0; i < limits::kMaxListeners; ++i) {
    ASSERT_TRUE(m.add_listener("127.0.0.1:" + std::to_string(1000 + i), false).ok());
  }
  auto over = m.add_listener("127.0.0.1:2000", false);
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.error().code, Errc::invalid);
}

// The metrics process maps the table read-only: a write is a fault, not a
// silent change of the workers' counts.
TEST(NetMetrics, ReadOnlyTableCannotBeWritten) {
  auto table = MetricsTable::create(1);
  ASSERT_TRUE(table.ok());
  ASSERT_TRUE((*table)->make_read_only().ok());
  // SIGSEGV, or a sanitizer's report of it and a non-zero exit.
  auto faulted = [](int status) {
    return WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) != 0);
  };
  EXPECT_EXIT(MetricsTable::add((*table)->row(0).retr, 1), faulted, "");
  EXPECT_FALSE(MetricsTable::local()->make_read_only().ok());
}

}  // namespace
}  // namespace apop::net
