#include "cli/pop3_target.hpp"

#include <openssl/crypto.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "cli/common.hpp"
#include "client/protocol.hpp"

namespace apop::cli {
namespace {

std::optional<std::string> percent_decode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out.push_back(s[i]);
      continue;
    }
    if (i + 2 >= s.size() || !std::isxdigit(static_cast<unsigned char>(s[i + 1])) ||
        !std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      return std::nullopt;
    }
    out.push_back(static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16)));
    i += 2;
  }
  return out;
}

}  // namespace

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
