// `apop bench HOST[:PORT] --accounts FILE ...`: the POP3 load generator
// (src/client/bench.hpp does the work; this is options and output).
#include <sys/resource.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "client/bench.hpp"
#include "client/protocol.hpp"

namespace apop::cli {
namespace {

constexpr const char* kBenchFooter = R"(Workloads (after login; every session ends with QUIT):
  login  nothing          stat   STAT
  retr   STAT, RETR 1..n  top    STAT, TOP 1..n 0
  mixed  STAT, then by session number: nothing / UIDL / TOP of 10 / LIST + RETR of 10
  (n: every message, or --max-messages)
Each in-flight session uses its own account while there are enough of them
(apop locks a maildrop per session). Rates use the wall time of the run; MB is
10^6 octets, counting every octet received. Latencies: "connect" is TCP
connect to greeting (TLS handshake included), "auth" the login exchange.
Exit status:
  0  every session succeeded
  1  the run could not start (accounts file, resolve, CA file)
  2  the run finished, but some sessions failed (see errors)
  64 usage error
SIGINT/SIGTERM end the run early (sessions in flight finish; a second signal
abandons them) and the report covers what ran.)";

struct BenchArgs {
  std::string target;
  std::string accounts;
  std::uint64_t sessions = 1000;
  unsigned concurrency = 1;
  std::string workload = "stat";
  std::string auth = "apop";
  bool tls = false;
  std::string ca_file;
  bool insecure = false;
  std::string server_name;
  double duration = 0;
  double timeout = 30;
  double hold = 0;
  std::uint64_t max_messages = 0;
  bool json = false;
};

bool split_target(const std::string& t, bool tls, std::string& host, std::uint16_t& port) {
  std::string_view v = t;
  std::string_view p;
  if (!v.empty() && v.front() == '[') {
    std::size_t close = v.find(']');
    if (close == std::string_view::npos) return false;
    host = std::string(v.substr(1, close - 1));
    std::string_view rest = v.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return false;
      p = rest.substr(1);
    }
  } else {
    std::size_t colon = v.rfind(':');
    if (colon != std::string_view::npos && v.find(':') != colon) return false;  // bare IPv6
    host = std::string(v.substr(0, colon));
    if (colon != std::string_view::npos) p = v.substr(colon + 1);
  }
  if (host.empty()) return false;
  port = tls ? 995 : 110;
  if (!p.empty() || t.back() == ':') {
    auto n = client::parse_number(p);
    if (!n || *n == 0 || *n > 65535) return false;
    port = static_cast<std::uint16_t>(*n);
  }
  return true;
}

// The values --workload and --auth accept (client/bench.hpp's names).
std::vector<std::string> workload_names() {
  using client::bench::Workload;
  std::vector<std::string> out;
  for (Workload w :
       {Workload::login, Workload::stat, Workload::retr, Workload::top, Workload::mixed}) {
    out.emplace_back(client::bench::workload_name(w));
  }
  return out;
}

std::vector<std::string> auth_kind_names() {
  using client::bench::AuthKind;
  std::vector<std::string> out;
  for (AuthKind k : {AuthKind::apop, AuthKind::user, AuthKind::scram_sha_256, AuthKind::none}) {
    out.emplace_back(client::bench::auth_kind_name(k));
  }
  return out;
}

std::chrono::milliseconds seconds(double s) {
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::llround(s * 1000.0)));
}

// Many sessions in flight need as many descriptors: raise the soft limit to the hard one.
void raise_nofile() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &rl);
  }
}

int run_bench(const BenchArgs& a) {
  client::bench::Options o;
  if (!split_target(a.target, a.tls, o.host, o.port)) {
    std::cerr << "apop bench: bad target " << a.target << " (expected HOST[:PORT])\n";
    return kExitUsage;
  }
  // --workload and --auth were checked by their validators.
  const auto w = client::bench::parse_workload(a.workload).value_or(client::bench::Workload::stat);
  const auto au = client::bench::parse_auth_kind(a.auth).value_or(client::bench::AuthKind::apop);
  if (a.sessions == 0 && a.duration <= 0) {
    std::cerr << "apop bench: --sessions 0 needs --duration (the run must be bounded)\n";
    return kExitUsage;
  }
  std::ifstream in(a.accounts, std::ios::binary);
  if (!in) {
    std::cerr << "apop bench: cannot read the accounts file " << a.accounts << "\n";
    return kExitError;
  }
  std::ostringstream text;
  text << in.rdbuf();
  auto accounts = client::bench::parse_accounts(text.str());
  if (!accounts) {
    std::cerr << "apop bench: " << a.accounts << ": " << accounts.error().message << "\n";
    return kExitError;
  }
  o.accounts = std::move(*accounts);
  o.sessions = a.sessions;
  o.concurrency = a.concurrency;
  o.workload = w;
  o.auth = au;
  o.tls = a.tls;
  o.tls_options.ca_file = a.ca_file;
  o.tls_options.insecure = a.insecure;
  o.tls_options.server_name = a.server_name;
  o.duration = seconds(a.duration);
  o.timeout = seconds(a.timeout);
  o.hold = seconds(a.hold);
  o.max_messages = a.max_messages;
  o.progress = [](std::string_view line) { std::cerr << "apop bench: " << line << std::endl; };
  if (o.auth != client::bench::AuthKind::none &&
      o.accounts.size() < std::min<std::uint64_t>(o.concurrency, o.sessions ? o.sessions : ~0ull)) {
    std::cerr << "apop bench: warning: " << o.accounts.size() << " accounts for " << o.concurrency
              << " sessions in flight; sessions will share accounts "
              << "(servers that lock a maildrop answer [IN-USE])\n";
  }
  raise_nofile();
  auto r = client::bench::run(o);
  if (!r) {
    std::cerr << "apop bench: " << r.error().message << "\n";
    return kExitError;
  }
  if (a.json) {
    std::cout << r->json().dump(2) << "\n";
  } else {
    std::cout << r->text();
  }
  std::cout.flush();
  return r->sessions_failed == 0 ? kExitOk : 2;
}

}  // namespace

void register_bench(CLI::App& app, Registry& registry) {
  auto a = std::make_shared<BenchArgs>();
  CLI::App* sub = app.add_subcommand("bench", "POP3 load generator: sessions/s, MB/s, latencies");
  sub->footer(kBenchFooter);
  sub->add_option("target", a->target, "HOST[:PORT] of the server (port 110, 995 with --tls)")
      ->required();
  sub->add_option("--accounts", a->accounts, "File with one \"USER SECRET\" pair a line")
      ->required();
  sub->add_option("--sessions", a->sessions, "Sessions to run in total (0: until --duration)")
      ->capture_default_str();
  sub->add_option("--concurrency", a->concurrency, "Sessions in flight at once")
      ->check(CLI::Range(1u, 1'000'000u))
      ->capture_default_str();
  sub->add_option("--workload", a->workload, "login, stat, retr, top or mixed")
      ->check(CLI::IsMember(workload_names(), CLI::ignore_case))
      ->capture_default_str();
  sub->add_option("--auth", a->auth,
                  "apop, user, scram-sha-256, or none (no login: greeting, [hold,] QUIT)")
      ->check(CLI::IsMember(auth_kind_names(), CLI::ignore_case))
      ->capture_default_str();
  CLI::Option* tls = sub->add_flag("--tls", a->tls, "Implicit TLS (pop3s)");
  sub->add_option("--ca-file", a->ca_file, "With --tls: verify against this PEM CA file")
      ->check(CLI::ExistingFile)
      ->needs(tls);
  sub->add_flag("--insecure", a->insecure, "With --tls: do not verify the certificate")->needs(tls);
  sub->add_option("--server-name", a->server_name,
                  "With --tls: name for SNI and the certificate check (default: HOST)")
      ->needs(tls);
  sub->add_option("--duration", a->duration, "Stop starting sessions after SECS (0: no limit)")
      ->check(CLI::Range(0.0, 86'400.0));
  sub->add_option("--timeout", a->timeout, "Silence allowed per session, SECS")
      ->check(CLI::Range(0.001, 3600.0))
      ->capture_default_str();
  sub->add_option("--max-messages", a->max_messages, "RETR/TOP at most N messages per session");
  sub->add_option("--hold", a->hold,
                  "Keep each session logged in and idle for SECS before QUIT (memory tests); "
                  "prints \"holding N sessions\" to stderr once all are")
      ->check(CLI::Range(0.0, 86'400.0));
  sub->add_flag("--json", a->json, "Print the report as JSON");
  registry.add(sub, [a] { return run_bench(*a); });
}

}  // namespace apop::cli
