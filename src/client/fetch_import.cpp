// The parts of `apop fetch import-config` shared by both rc formats: names,
// the TOML text, the report (client/fetch_import.hpp).
#include "client/fetch_import.hpp"

#include <map>
#include <set>

#include "common/limits.hpp"

namespace apop::client {
namespace {

// RFC 3629 §4: well-formed UTF-8 (no overlongs, no surrogates, at most
// U+10FFFF). TOML 1.0 requires the document to be valid UTF-8.
bool is_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t n = 0;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      n = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 2;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;
    for (std::size_t k = 1; k <= n; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      const unsigned l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
      if (d < l || d > h) return false;
    }
    i += n + 1;
  }
  return true;
}

bool account_is_utf8(const ImportedAccount& a) {
  for (const std::string* f :
       {&a.url, &a.auth, &a.tls, &a.ca_file, &a.password_file, &a.to, &a.deliver_to})
    if (!is_utf8(*f)) return false;
  for (const auto& arg : a.password_command)
    if (!is_utf8(arg)) return false;
  return true;
}

// [A-Za-z0-9._-] (the schema's account names); anything else becomes '_'.
std::string sanitize_name(std::string_view s) {
  std::string out;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    out += ok ? c : '_';
    if (out.size() >= 64) break;
  }
  return out;
}

}  // namespace

void append_import(ImportResult& into, ImportResult from) {
  const std::size_t base = into.accounts.size();
  for (auto& a : from.accounts) into.accounts.push_back(std::move(a));
  for (auto& s : from.skipped) {
    if (s.index != Skipped::kNone) s.index += base;
    into.skipped.push_back(std::move(s));
  }
  for (const auto& sp : from.secret_spans) into.secret_spans.push_back(sp);
}

void finish_import(ImportResult& r) {
  // Names: the hint (getmail's file name), else the host; USER-HOST for
  // hosts that several accounts share; then numbered.
  std::map<std::string, std::size_t> per_base;
  std::vector<std::string> base(r.accounts.size());
  for (std::size_t i = 0; i < r.accounts.size(); ++i) {
    const auto& a = r.accounts[i];
    base[i] = sanitize_name(a.name_hint.empty() ? a.host : a.name_hint);
    if (base[i].empty()) base[i] = "account";
    ++per_base[base[i]];
  }
  std::set<std::string> used;
  for (std::size_t i = 0; i < r.accounts.size(); ++i) {
    auto& a = r.accounts[i];
    std::string name = base[i];
    if (per_base[base[i]] > 1 && a.name_hint.empty() && !a.user.empty())
      name = sanitize_name(a.user + "-" + a.host);
    std::string candidate = name;
    for (unsigned n = 2; used.count(candidate) != 0; ++n)
      candidate = name + "-" + std::to_string(n);
    used.insert(candidate);
    a.name = candidate;
  }
  for (auto& s : r.skipped)
    if (s.index != Skipped::kNone && s.index < r.accounts.size())
      s.account = r.accounts[s.index].name;

  // Accounts not written: a value that is not UTF-8, or beyond the cap.
  std::vector<ImportedAccount> kept;
  std::vector<std::size_t> new_index(r.accounts.size(), Skipped::kNone);
  for (std::size_t i = 0; i < r.accounts.size(); ++i) {
    auto& a = r.accounts[i];
    std::string why;
    if (!account_is_utf8(a)) {
      why = "a value (path, host or command) is not valid UTF-8, which TOML cannot hold";
    } else if (kept.size() >= limits::kMaxImportAccounts) {
      why = "more than " + std::to_string(limits::kMaxImportAccounts) + " accounts";
    }
    if (!why.empty()) {
      r.skipped.push_back({a.source, a.name, "account", "not imported: " + why, Skipped::kNone});
      continue;
    }
    new_index[i] = kept.size();
    kept.push_back(std::move(a));
  }
  for (auto& s : r.skipped)
    if (s.index != Skipped::kNone)
      s.index = s.index < new_index.size() ? new_index[s.index] : Skipped::kNone;
  r.accounts = std::move(kept);
}

std::string toml_quote(std::string_view s) {
  // TOML 1.0 basic string: ", \ and the control characters U+0000-U+001F
  // and U+007F must be escaped; the rest is UTF-8 as is.
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out = "\"";
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (ch) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (c < 0x20 || c == 0x7F) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 15];
        } else {
          out += ch;
        }
    }
  }
  out += '"';
  return out;
}

std::string format_interval(std::uint64_t seconds) {
  if (seconds != 0 && seconds % 86400 == 0) return std::to_string(seconds / 86400) + "d";
  if (seconds != 0 && seconds % 3600 == 0) return std::to_string(seconds / 3600) + "h";
  if (seconds != 0 && seconds % 60 == 0) return std::to_string(seconds / 60) + "m";
  return std::to_string(seconds) + "s";
}

std::string format_size(std::uint64_t octets) {
  constexpr std::uint64_t K = 1024;
  if (octets != 0 && octets % (K * K * K) == 0) return std::to_string(octets / (K * K * K)) + "G";
  if (octets != 0 && octets % (K * K) == 0) return std::to_string(octets / (K * K)) + "M";
  if (octets != 0 && octets % K == 0) return std::to_string(octets / K) + "K";
  return std::to_string(octets);
}

std::string render_toml(const std::vector<ImportedAccount>& accounts,
                        const std::vector<std::string>& sources) {
  std::string out = "# apop fetch configuration, written by `apop fetch import-config` from:\n";
  for (const auto& s : sources) {
    // A comment runs to the end of the line: no line break or control
    // character of a file name may end it early.
    // Nor may a name that is not UTF-8 make the document invalid TOML.
    const bool utf8 = is_utf8(s);
    std::string shown;
    for (char c : s) {
      const auto u = static_cast<unsigned char>(c);
      shown += (u < 0x20 || u == 0x7F || (!utf8 && u >= 0x80)) ? '?' : c;
    }
    out += "#   " + shown + "\n";
  }
  out += "# Options that could not be carried over were listed when it ran.\n";
  auto line = [&out](std::string_view key, const std::string& value) {
    if (!value.empty()) out += std::string(key) + " = " + toml_quote(value) + "\n";
  };
  for (const auto& a : accounts) {
    out += "\n[[account]]\n";
    line("name", a.name);
    line("url", a.url);
    line("auth", a.auth);
    line("tls", a.tls);
    line("ca_file", a.ca_file);
    line("password_file", a.password_file);
    if (!a.password_command.empty()) {
      out += "password_command = [";
      for (std::size_t i = 0; i < a.password_command.size(); ++i)
        out += (i ? ", " : "") + toml_quote(a.password_command[i]);
      out += "]\n";
    }
    line("to", a.to);
    line("deliver_to", a.deliver_to);
    if (a.keep) out += std::string("keep = ") + (*a.keep ? "true" : "false") + "\n";
    if (a.max_message_size) line("max_message_size", format_size(*a.max_message_size));
    if (a.fetch_limit) out += "fetch_limit = " + std::to_string(*a.fetch_limit) + "\n";
    if (a.poll_interval) line("poll_interval", format_interval(*a.poll_interval));
  }
  return out;
}

std::string pop3_url(bool implicit_tls, std::string_view user, std::string_view host,
                     std::string_view port) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out = implicit_tls ? "pop3s://" : "pop3://";
  for (char ch : user) {
    const auto c = static_cast<unsigned char>(ch);
    const bool unreserved = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                            (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
    if (unreserved) {
      out += ch;
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  out += '@';
  if (host.find(':') != std::string_view::npos && host.front() != '[')
    out += "[" + std::string(host) + "]";
  else
    out += host;
  if (!port.empty()) out += ":" + std::string(port);
  return out;
}

std::string format_skipped(const Skipped& s) {
  std::string out = s.where + ": ";
  if (!s.account.empty()) out += "account " + s.account + ": ";
  out += s.option + ": " + s.reason;
  // One line on a terminal: no control characters from a file or host name.
  for (char& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) c = '?';
  return out;
}

}  // namespace apop::client
