// `apop probe HOST[:PORT]`: a security audit of any POP3 server.
//
// The probe only sends CAPA, STLS and QUIT: never USER, PASS, APOP or AUTH,
// not even with made-up credentials. Connection 1 of the plain port asks CAPA,
// tries STLS when offered and asks CAPA again inside TLS; the other
// connections only read the greeting (for the APOP timestamps). The same is
// done on --tls-port with implicit TLS. The analysis (client/probe.hpp) is
// I/O-free; this file only talks to the server and prints the report.
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <ctime>
#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "cli/pop3_target.hpp"
#include "client/probe.hpp"
#include "client/transport.hpp"
#include "common/limits.hpp"
#include "common/parse.hpp"

namespace apop::cli {

namespace {

namespace pr = client::probe;

// The server could not be reached at all (neither port). Shared meaning with
// `apop fetch` (network error).
constexpr int kExitNetwork = 6;
// A CAPA reply longer than this is not read further (a hostile server cannot
// keep the probe reading forever).
constexpr std::size_t kMaxCapaReplyLines = 1000;

struct ProbeArgs {
  std::string target;
  unsigned tls_port = 0;
  unsigned connections = 8;
  std::string server_name;
  bool insecure_ok = false;
  // --ca-file, --timeout (default 10 s), --json (pop3_target.hpp).
  ConnectionArgs conn = [] {
    ConnectionArgs c;
    c.timeout = 10;
    return c;
  }();
};

// HOST, HOST:PORT, [V6]:PORT, [V6] or a bare IPv6 address (several colons).
bool parse_target(const std::string& s, std::string& host, std::uint16_t& port) {
  port = 110;
  std::string port_text;
  if (!s.empty() && s.front() == '[') {
    auto close = s.find(']');
    if (close == std::string::npos) return false;
    host = s.substr(1, close - 1);
    std::string rest = s.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return false;
      port_text = rest.substr(1);
      if (port_text.empty()) return false;
    }
  } else if (auto c = s.find(':');
             c != std::string::npos && s.find(':', c + 1) == std::string::npos) {
    host = s.substr(0, c);
    port_text = s.substr(c + 1);
    if (port_text.empty()) return false;
  } else {
    host = s;  // a name, or a bare IPv6 address
    if (host.find(':') != std::string::npos &&
        host.find_first_not_of("0123456789abcdefABCDEF:.") != std::string::npos) {
      return false;
    }
  }
  if (host.empty()) return false;
  if (!port_text.empty()) {
    const auto v = parse_decimal<std::uint16_t>(port_text, {.max_digits = 5});
    if (!v || *v == 0) return false;
    port = *v;
  }
  return true;
}

// Whether HOST resolves to loopback addresses only (127.0.0.0/8, ::1,
// IPv4-mapped loopback): what a server that counts loopback as secure sees.
bool resolves_to_loopback(const std::string& host) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0 || res == nullptr) return false;
  bool all = true;
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    bool lo = false;
    if (ai->ai_family == AF_INET) {
      const auto* a = reinterpret_cast<const sockaddr_in*>(ai->ai_addr);
      lo = (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    } else if (ai->ai_family == AF_INET6) {
      const auto* a = reinterpret_cast<const sockaddr_in6*>(ai->ai_addr);
      const in6_addr& x = a->sin6_addr;
      lo = IN6_IS_ADDR_LOOPBACK(&x) || (IN6_IS_ADDR_V4MAPPED(&x) && x.s6_addr[12] == 127);
    }
    all = all && lo;
  }
  ::freeaddrinfo(res);
  return all;
}

std::string line_text(const Result<std::string>& r) {
  return r ? r.value() : "(" + r.error().message + ")";
}

// CAPA on an open connection: the parsed reply, or received=false on -ERR or
// a failure.
pr::Capabilities ask_capa(client::Transport& t) {
  if (!t.write("CAPA\r\n")) return {};
  auto status = t.read_line(limits::kMaxResponseLine);
  if (!status || status->rfind("+OK", 0) != 0) return {};
  std::vector<std::string> lines;
  for (std::size_t i = 0; i < kMaxCapaReplyLines; ++i) {
    auto l = t.read_line(limits::kMaxResponseLine);
    if (!l) break;
    if (*l == ".") return pr::parse_capa(lines);
    lines.push_back(l->rfind('.', 0) == 0 ? l->substr(1) : *l);  // dot-unstuff
  }
  pr::Capabilities partial = pr::parse_capa(lines);  // cut short: keep what came
  return partial;
}

void quit(client::Transport& t) {
  if (t.write("QUIT\r\n")) (void)t.read_line(limits::kMaxResponseLine);
}

client::ConnectOptions options(const ProbeArgs& a, const std::string& host, std::uint16_t port,
                               bool implicit) {
  client::ConnectOptions o;
  o.host = host;
  o.port = port;
  o.implicit_tls = implicit;
  o.tls.server_name = a.server_name;
  o.tls.ca_file = a.conn.ca_file;
  // Verification always runs and is reported (TlsInfo.verified,
  // hostname_match); the probe must see the certificate even when it is bad.
  o.tls.insecure = true;
  o.timeout = std::chrono::seconds(a.conn.timeout);
  return o;
}

void probe_plain(const ProbeArgs& a, pr::ProbeInput& in) {
  auto opts = options(a, in.host, in.port, false);
  for (unsigned i = 0; i < a.connections; ++i) {
    client::NetFailure why = client::NetFailure::none;
    auto conn = client::connect(opts, &why);
    if (!conn) {
      if (i == 0) {
        in.reachable = false;
        in.connect_error = conn.error().message;
        return;
      }
      continue;  // a later refusal (rate limit): keep what we have
    }
    in.reachable = true;
    auto& t = **conn;
    auto greeting = t.read_line(limits::kMaxResponseLine);
    if (!greeting) {
      if (i == 0) in.connect_error = "no greeting: " + greeting.error().message;
      continue;
    }
    in.greetings.push_back(*greeting);
    if (greeting->rfind("+OK", 0) != 0) continue;
    if (i != 0) {
      quit(t);
      continue;
    }
    in.capa = ask_capa(t);
    if (in.capa.stls) {
      if (!t.write("STLS\r\n")) continue;
      auto reply = t.read_line(limits::kMaxResponseLine);
      in.stls_reply = line_text(reply);
      in.stls.attempted = true;
      if (!reply || reply->rfind("+OK", 0) != 0) {
        in.stls.error = "STLS refused: " + line_text(reply);
        continue;
      }
      if (t.buffered() != 0) {
        in.stls.injection = true;
        in.stls.error = "data after +OK to STLS";
        continue;
      }
      auto up = t.start_tls(opts.tls);
      if (!up) {
        // Errc::invalid from start_tls is the injection check (octets
        // waiting on the socket before the ClientHello).
        if (up.error().code == Errc::invalid) in.stls.injection = true;
        in.stls.error = up.error().message;
        continue;
      }
      in.stls.ok = true;
      in.stls.info = t.tls();
      in.stls.capa = ask_capa(t);
    }
    quit(t);
  }
}

void probe_tls(const ProbeArgs& a, pr::ProbeInput& in) {
  auto opts = options(a, in.host, *in.tls_port, true);
  for (unsigned i = 0; i < a.connections; ++i) {
    client::NetFailure why = client::NetFailure::none;
    auto conn = client::connect(opts, &why);
    if (!conn) {
      if (i == 0) {
        bool handshake =
            why == client::NetFailure::tls_handshake || why == client::NetFailure::tls_verify;
        in.tls_reachable = handshake;
        in.implicit_tls.attempted = handshake;
        if (handshake) {
          in.implicit_tls.error = conn.error().message;
        } else {
          in.tls_connect_error = conn.error().message;
        }
        return;
      }
      continue;
    }
    auto& t = **conn;
    if (i == 0) {
      in.tls_reachable = true;
      in.implicit_tls.attempted = true;
      in.implicit_tls.ok = true;
      in.implicit_tls.info = t.tls();
    }
    auto greeting = t.read_line(limits::kMaxResponseLine);
    if (!greeting) continue;
    in.tls_greetings.push_back(*greeting);
    if (greeting->rfind("+OK", 0) != 0) continue;
    if (i == 0) in.implicit_tls.capa = ask_capa(t);
    quit(t);
  }
}

int run_probe(const ProbeArgs& a) {
  pr::ProbeInput in;
  if (!parse_target(a.target, in.host, in.port)) {
    std::cerr << "probe: bad target " << a.target << " (expected HOST[:PORT] or [IPV6]:PORT)\n";
    return kExitUsage;
  }
  if (a.tls_port != 0) in.tls_port = static_cast<std::uint16_t>(a.tls_port);
  in.insecure_ok = a.insecure_ok;
  in.now = static_cast<std::int64_t>(std::time(nullptr));
  in.loopback = resolves_to_loopback(in.host);
  probe_plain(a, in);
  if (in.tls_port) probe_tls(a, in);
  if (!in.reachable && !in.tls_reachable) {
    std::cerr << "probe: cannot reach " << a.target << ": " << in.connect_error;
    if (in.tls_port) std::cerr << "; TLS port " << *in.tls_port << ": " << in.tls_connect_error;
    std::cerr << "\n";
    return kExitNetwork;
  }
  auto report = pr::analyze(in);
  std::cout << (a.conn.json ? pr::to_json(report) : pr::to_text(report)) << std::flush;
  return kExitOk;
}

}  // namespace

void register_probe(CLI::App& app, Registry& registry) {
  auto a = std::make_shared<ProbeArgs>();
  CLI::App* sub = app.add_subcommand(
      "probe",
      "Audit a POP3 server (APOP timestamps, CAPA, TLS) and grade it; sends no credentials");
  sub->add_option("target", a->target, "HOST[:PORT] (port 110 by default; [IPV6]:PORT)")
      ->required();
  sub->add_option("--tls-port", a->tls_port,
                  "Also probe implicit TLS on this port (995 by convention)")
      ->check(CLI::Range(1u, 65535u));
  sub->add_option("--connections", a->connections,
                  "Connections for the timestamp analysis (default 8)")
      ->check(CLI::Range(1u, static_cast<unsigned>(pr::kMaxConnections)));
  sub->add_option("--server-name", a->server_name,
                  "Name to verify the certificate against (default: HOST)");
  sub->add_flag("--insecure-ok", a->insecure_ok,
                "Do not lower the grade for an unverifiable certificate (still reported)");
  ConnectionOptionSet set;
  set.login = false;  // the probe sends no credentials
  set.tls_mode = false;
  set.listing = false;
  set.verbose = false;
  set.max_timeout = 300;
  set.timeout_help = "Seconds allowed per connection step";
  set.ca_file_help = "PEM CA certificates to verify the server (default: system store)";
  set.json_help = "Print the report as JSON (grade under the key \"grade\")";
  add_connection_options(sub, a->conn, set);
  registry.add(sub, [a] { return run_probe(*a); });
}

}  // namespace apop::cli
