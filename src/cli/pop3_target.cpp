#include "cli/pop3_target.hpp"

#include <openssl/crypto.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "cli/common.hpp"
#include "client/protocol.hpp"
#include "client/transport.hpp"

namespace apop::cli {
namespace {

std::optional<std::string> percent_decode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out.push_back(s[i]);
      continue;
    }
    unsigned char octet = 0;
    const char* hex = s.data() + i + 1;
    if (i + 2 >= s.size() || std::from_chars(hex, hex + 2, octet, 16).ptr != hex + 2) {
      return std::nullopt;
    }
    out.push_back(static_cast<char>(octet));
    i += 2;
  }
  return out;
}

// --auth's values: the mechanism names of client::parse_auth_mech.
std::vector<std::string> auth_names() {
  std::vector<std::string> out;
  for (client::AuthMech m : client::kAllAuthMechs) {
    out.emplace_back(client::auth_mech_name(m));
  }
  return out;
}

}  // namespace

// One write of prefix + line + '\n' (not printf's "%.*s": g++ 12 -O2 warns
// that a string_view's data() may be null, which breaks the release build).
void print_line(std::string_view prefix, std::string_view line) {
  std::string out;
  out.reserve(prefix.size() + line.size() + 1);
  out.append(prefix).append(line).push_back('\n');
  std::fwrite(out.data(), 1, out.size(), stderr);
}

void add_connection_options(CLI::App* sub, ConnectionArgs& a, const ConnectionOptionSet& set) {
  if (set.login) {
    sub->add_option("--password-file", a.password_file,
                    "Read the password from the first line of this file")
        ->check(CLI::ExistingFile);
    sub->add_option("--auth", a.auth, "Login mechanism (default auto)")
        ->check(CLI::IsMember(auth_names(), CLI::ignore_case));
  }
  if (set.tls_mode) {
    sub->add_option("--tls", a.tls, "TLS mode (default: auto, implicit for pop3s://)")
        ->check(CLI::IsMember({"implicit", "starttls", "auto", "none"}));
  }
  sub->add_option("--ca-file", a.ca_file, set.ca_file_help)->check(CLI::ExistingFile);
  if (set.tls_mode) {
    sub->add_flag("--insecure", a.insecure, "Do not verify the server certificate (dangerous)");
  }
  if (set.login) {
    sub->add_flag("--allow-plaintext", a.allow_plaintext, "Allow sending the password without TLS");
    sub->add_flag("--accept-downgrade", a.accept_downgrade,
                  "Continue when the server offers less (TLS, APOP, SCRAM) than last time");
  }
  sub->add_option("--timeout", a.timeout,
                  std::string(set.timeout_help) + " (default " + std::to_string(a.timeout) + ")")
      ->check(CLI::Range(1u, set.max_timeout));
  if (set.listing) {
    sub->add_option("--max-messages", a.max_messages,
                    "Refuse a maildrop announcing more messages than this (default 1000000; "
                    "exit 5)")
        ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{100'000'000}));
    sub->add_option("--max-listing-bytes", a.max_listing_bytes,
                    "Refuse a UIDL listing with more octets of unique-ids than this (default "
                    "67108864; exit 5)")
        ->check(CLI::Range(std::uint64_t{1024}, std::uint64_t{1} << 40));
  }
  sub->add_flag("--json", a.json, set.json_help);
  if (set.verbose) {
    sub->add_flag("-v,--verbose", a.verbose, "Protocol trace on standard error (secrets hidden)");
  }
}

client::FetchOptions fetch_options(const Target& target, const Endpoint& endpoint,
                                   const ConnectionArgs& a, std::string_view command) {
  client::FetchOptions opts;
  opts.user = target.user;
  opts.auth = client::parse_auth_mech(a.auth).value_or(client::AuthMech::automatic);
  opts.tls_mode = endpoint.mode;
  opts.tls.server_name = target.host;
  opts.host = target.host;
  opts.port = endpoint.port;
  opts.tls.ca_file = a.ca_file;
  opts.tls.insecure = a.insecure;
  opts.allow_plaintext = a.allow_plaintext;
  opts.accept_downgrade = a.accept_downgrade;
  opts.listing.max_messages = a.max_messages;
  opts.listing.max_bytes = a.max_listing_bytes;
  if (a.verbose) opts.trace = [](std::string_view l) { print_line({}, l); };
  opts.warn = [prefix = "apop " + std::string(command) + ": warning: "](std::string_view w) {
    print_line(prefix, w);
  };
  return opts;
}

client::ConnectOptions connect_options(const Target& target, const Endpoint& endpoint,
                                       const client::FetchOptions& opts, const ConnectionArgs& a) {
  client::ConnectOptions co;
  co.host = target.host;
  co.port = endpoint.port;
  co.implicit_tls = endpoint.mode == client::TlsMode::implicit;
  co.tls = opts.tls;
  co.timeout = std::chrono::seconds(a.timeout);
  return co;
}

client::FetchSummary connect_and_run(
    const client::ConnectOptions& co, bool show_tls,
    const std::function<client::FetchSummary(client::Transport&)>& session) {
  client::NetFailure nf = client::NetFailure::none;
  auto t = client::connect(co, &nf);
  if (!t) {
    client::FetchSummary sum;
    sum.status = client::status_for(nf);
    sum.error = t.error().message;
    return sum;
  }
  if (show_tls && (*t)->tls().active) {
    std::fprintf(stderr, "-- TLS %s %s\n", (*t)->tls().protocol.c_str(),
                 (*t)->tls().cipher.c_str());
  }
  return session(**t);
}

// pop3://USER@HOST[:PORT] and pop3s://... (RFC 2384 without ;AUTH=).
std::optional<Target> parse_url(std::string_view url, std::string& why) {
  Target t;
  if (url.rfind("pop3://", 0) == 0) {
    url.remove_prefix(7);
  } else if (url.rfind("pop3s://", 0) == 0) {
    url.remove_prefix(8);
    t.implicit = true;
  } else {
    why = "the URL must start with pop3:// or pop3s://";
    return std::nullopt;
  }
  if (!url.empty() && url.back() == '/') url.remove_suffix(1);
  std::size_t at = url.rfind('@');
  if (at == std::string_view::npos || at == 0) {
    why = "the URL needs a user: pop3://USER@HOST";
    return std::nullopt;
  }
  auto user = percent_decode(url.substr(0, at));
  const bool user_ok =
      user && !user->empty() && std::all_of(user->begin(), user->end(), [](char c) {
        auto u = static_cast<unsigned char>(c);
        return u > 0x20 && u != 0x7f;  // no space or control: it goes into USER/APOP lines
      });
  if (!user_ok) {
    why = "bad user name in the URL";
    return std::nullopt;
  }
  t.user = *user;
  std::string_view hp = url.substr(at + 1);
  std::string_view port;
  if (!hp.empty() && hp.front() == '[') {
    std::size_t close = hp.find(']');
    if (close == std::string_view::npos) {
      why = "unclosed '[' in the host";
      return std::nullopt;
    }
    t.host = std::string(hp.substr(1, close - 1));
    std::string_view rest = hp.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') {
        why = "junk after the host";
        return std::nullopt;
      }
      port = rest.substr(1);
    }
  } else {
    std::size_t colon = hp.rfind(':');
    t.host = std::string(hp.substr(0, colon));
    if (colon != std::string_view::npos) port = hp.substr(colon + 1);
  }
  if (t.host.empty() || t.host.find_first_of("/?#@ ") != std::string::npos) {
    why = "bad host in the URL";
    return std::nullopt;
  }
  if (!port.empty()) {
    auto p = client::parse_number(port);
    if (!p || *p == 0 || *p > 65535) {
      why = "bad port in the URL";
      return std::nullopt;
    }
    t.port = static_cast<std::uint16_t>(*p);
  }
  return t;
}

std::optional<std::string> take_password_env() {
  char* env = std::getenv(kPasswordEnv);
  if (env == nullptr) return std::nullopt;
  std::optional<std::string> value;
  if (*env != '\0') value = std::string(env);
  // Overwrite the value in place (the initial environment block is what
  // /proc/PID/environ shows; unsetenv only drops the pointer), then remove
  // the variable: children (the MDA and what it runs) build on environ.
  OPENSSL_cleanse(env, std::strlen(env));
  ::unsetenv(kPasswordEnv);
  return value;
}

Result<std::string> read_password(const std::string& password_file) {
  // Taken out of the environment whichever source is used.
  std::optional<std::string> env = take_password_env();
  if (!password_file.empty()) {
    std::ifstream in(password_file, std::ios::binary);
    if (!in) return make_error(Errc::invalid, "cannot read the password file " + password_file);
    std::string line;
    std::getline(in, line);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) return make_error(Errc::invalid, "the password file's first line is empty");
    return line;
  }
  if (env) return std::move(*env);
  if (::isatty(STDIN_FILENO) == 0 && ::isatty(STDERR_FILENO) == 0) {
    return make_error(
        Errc::invalid,
        "no password: use --password-file or $APOP_PASSWORD (no terminal to prompt on)");
  }
  auto s = read_secret(false, false);
  if (!s)
    return make_error(Errc::invalid,
                      s.error().message + " (or use --password-file / $APOP_PASSWORD)");
  return s;
}

Result<std::string> read_login_password(const std::string& password_file) {
  auto password = read_password(password_file);
  if (!password) return password;
  if (password->find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos) {
    return make_error(Errc::invalid, "the password contains a line break or NUL");
  }
  return password;
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", b, units[u]);
  return buf;
}

std::optional<Endpoint> resolve_endpoint(const Target& target, const std::string& tls,
                                         std::string& why) {
  using client::TlsMode;
  TlsMode mode = target.implicit ? TlsMode::implicit : TlsMode::automatic;
  if (!tls.empty()) {
    if (tls == "implicit") {
      mode = TlsMode::implicit;
    } else if (tls == "starttls") {
      mode = TlsMode::starttls;
    } else if (tls == "auto") {
      mode = TlsMode::automatic;
    } else if (tls == "none") {
      mode = TlsMode::none;
    } else {
      why = "--tls must be implicit, starttls, auto or none";
      return std::nullopt;
    }
    if (target.implicit && mode != TlsMode::implicit) {
      why = "pop3s:// means implicit TLS; --tls " + tls + " contradicts it";
      return std::nullopt;
    }
  }
  const bool implicit = mode == TlsMode::implicit;
  return Endpoint{mode, target.port != 0 ? target.port : std::uint16_t(implicit ? 995 : 110)};
}

}  // namespace apop::cli
