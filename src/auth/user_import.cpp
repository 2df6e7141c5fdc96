#include "auth/user_import.hpp"

#include <openssl/crypto.h>

#include <map>
#include <optional>

#include "auth/base64.hpp"
#include "auth/foreign_hash.hpp"
#include "auth/username.hpp"
#include "common/limits.hpp"
#include "common/text.hpp"

namespace apop::auth {
namespace {

// Blanks at either end, and CRs at the end.
std::string_view trim_line(std::string_view s) { return trim_right(trim(s), " \t\r"); }

// Calls fn(line_number, line) for every line (without its LF and a CR before it).
template <typename Fn>
void for_each_line(std::string_view text, Fn fn) {
  std::size_t n = 0;
  while (!text.empty()) {
    const std::size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    fn(++n, line);
  }
}

std::optional<std::string> hex_decode(std::string_view s) {
  if (s.size() % 2 != 0) return std::nullopt;
  std::string out;
  for (std::size_t i = 0; i < s.size(); i += 2) {
    int v = 0;
    for (char c : s.substr(i, 2)) {
      int d = c >= '0' && c <= '9'   ? c - '0'
              : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                     : -1;
      if (d < 0) return std::nullopt;
      v = v * 16 + d;
    }
    out.push_back(static_cast<char>(v));
  }
  return out;
}

// A plaintext password must be usable over POP3: no NUL/CR/LF, not empty,
// at most limits::kMaxSecret octets. Empty string when fine.
std::string check_plaintext(std::string_view pw) {
  if (pw.empty()) return "empty password";
  if (pw.find_first_of(std::string_view("\0\r\n", 3)) != std::string_view::npos) {
    return "the password contains NUL, CR or LF";
  }
  if (pw.size() > limits::kMaxSecret) {
    return "the password is longer than " + std::to_string(limits::kMaxSecret) + " octets";
  }
  return {};
}

void skip(ImportLine& l, std::string why) {
  l.kind = ImportLine::Kind::skip;
  if (!l.secret.empty()) OPENSSL_cleanse(l.secret.data(), l.secret.size());
  l.secret.clear();
  l.reason = std::move(why);
}

// The password field of a passwd-file line.
void classify_password(ImportLine& l, std::string_view field) {
  std::string scheme = "CRYPT";  // Dovecot's passwd-file default_pass_scheme
  std::string_view data = field;
  if (is_foreign_hash(field)) {
    const std::size_t close = field.find('}');
    scheme = ascii_uppercase(field.substr(1, close - 1));
    data = field.substr(close + 1);
  }
  l.scheme = scheme;
  if (field.empty()) return skip(l, "empty password");
  std::string base = scheme;
  std::string enc;
  if (const std::size_t dot = scheme.find('.'); dot != std::string::npos) {
    base = scheme.substr(0, dot);
    enc = scheme.substr(dot + 1);
  }
  if (base == "PLAIN" || base == "CLEAR" || base == "CLEARTEXT") {
    std::optional<std::string> pw;
    if (enc.empty()) {
      pw = std::string(data);
    } else if (enc == "B64" || enc == "BASE64") {
      pw = base64_decode_strict(data);
    } else if (enc == "HEX") {
      pw = hex_decode(data);
    }
    if (!pw) return skip(l, "{" + scheme + "}: bad encoding");
    l.secret = std::move(*pw);
    l.kind = ImportLine::Kind::password;
    if (auto why = check_plaintext(l.secret); !why.empty()) skip(l, why);
    return;
  }
  if (base == "CRAM-MD5") {
    return skip(l,
                "{CRAM-MD5} keeps an HMAC-MD5 context usable for CRAM-MD5 only; apop keeps a "
                "plaintext-equivalent secret for CRAM-MD5 and APOP and cannot use it: set a new "
                "password");
  }
  if (base == "DIGEST-MD5" || base == "RPA" || base == "NTLM" || base == "LANMAN" ||
      base == "OTP" || base == "SKEY") {
    return skip(l, "{" + scheme + "} is a mechanism-specific secret apop cannot use");
  }
  std::string why;
  auto norm = normalize_foreign_hash("{" + scheme + "}" + std::string(data), why);
  if (!norm) return skip(l, why);
  l.secret = std::move(*norm);
  l.kind = ImportLine::Kind::hash;
}

// Marks later lines of a user already seen as duplicates.
void dedupe(std::vector<ImportLine>& lines) {
  std::map<std::string, std::size_t, std::less<>> first;
  for (auto& l : lines) {
    if (l.user.empty()) continue;
    auto [it, fresh] = first.emplace(l.user, l.line);
    if (!fresh) skip(l, "duplicate of line " + std::to_string(it->second));
  }
}

void skip_invalid_user(ImportLine& l) {
  skip(l, "not a valid apop user name (letters, digits, . _ + @ -; at most " +
              std::to_string(limits::kMaxUsername) + ")");
}

// The lines of `text` that are neither blank nor a comment ('#'), each
// parsed by fn(line, text, trimmed text) from an ImportLine with its line
// number; later lines of a user marked as duplicates.
template <typename Fn>
std::vector<ImportLine> parse_lines(std::string_view text, Fn fn) {
  std::vector<ImportLine> out;
  for_each_line(text, [&](std::size_t n, std::string_view line) {
    const std::string_view trimmed = trim_line(line);
    if (trimmed.empty() || trimmed.front() == '#') return;
    ImportLine l;
    l.line = n;
    fn(l, line, trimmed);
    out.push_back(std::move(l));
  });
  dedupe(out);
  return out;
}

}  // namespace

ImportLine::~ImportLine() {
  if (!secret.empty()) OPENSSL_cleanse(secret.data(), secret.size());
}

std::vector<ImportLine> parse_dovecot_passwd(std::string_view text) {
  return parse_lines(text, [](ImportLine& l, std::string_view line, std::string_view trimmed) {
    const std::size_t c1 = line.find(':');
    if (c1 == std::string_view::npos) {
      l.user = std::string(trimmed);
      if (!is_valid_username(l.user)) l.user.clear();
      return skip(l, "no ':' (expected user:password[:uid:gid:gecos:home:shell:extra])");
    }
    l.user = std::string(line.substr(0, c1));
    std::string_view rest = line.substr(c1 + 1);
    const std::size_t c2 = rest.find(':');
    std::string_view password = rest.substr(0, c2);
    // Fields 3-7 (uid gid gecos home shell) are ignored; field 8 holds
    // space-separated extra fields.
    std::string_view extra;
    {
      std::string_view r = c2 == std::string_view::npos ? std::string_view() : rest.substr(c2 + 1);
      for (int i = 0; i < 5 && !r.empty(); ++i) {
        const std::size_t c = r.find(':');
        r = c == std::string_view::npos ? std::string_view() : r.substr(c + 1);
      }
      extra = r;
    }
    if (!is_valid_username(l.user)) {
      const bool printable =
          l.user.size() <= limits::kMaxUsername &&
          l.user.find_first_of(std::string_view("\0\r\t ", 4)) == std::string::npos;
      if (!printable) l.user.clear();
      return skip_invalid_user(l);
    }
    classify_password(l, password);
    for (std::size_t pos = 0; pos < extra.size();) {
      const std::size_t sp = extra.find(' ', pos);
      std::string_view f = extra.substr(pos, sp == std::string_view::npos ? sp : sp - pos);
      const std::string_view key = f.substr(0, f.find('='));
      if (key == "nologin" || key == "nopassword" || key == "noauthenticate") {
        skip(l, "extra field " + std::string(key) + " (Dovecot would not log this user in)");
        break;
      }
      if (sp == std::string_view::npos) break;
      pos = sp + 1;
    }
  });
}

std::vector<ImportLine> parse_popauth(std::string_view text) {
  return parse_lines(text, [](ImportLine& l, std::string_view, std::string_view t) {
    l.scheme = "popauth";
    const std::size_t ws = t.find_first_of(" \t");
    std::string_view user = t.substr(0, ws);
    std::string_view secret =
        ws == std::string_view::npos ? std::string_view() : trim_line(t.substr(ws));
    if (!user.empty() && user.back() == ':') user.remove_suffix(1);  // "user: secret"
    l.user = std::string(user);
    if (!is_valid_username(l.user)) {
      if (l.user.size() > limits::kMaxUsername) l.user.clear();
      return skip_invalid_user(l);
    }
    l.secret = std::string(secret);
    l.kind = ImportLine::Kind::password;
    if (secret.empty()) {
      skip(l, "no secret (expected: user secret)");
    } else if (auto why = check_plaintext(l.secret); !why.empty()) {
      skip(l, why);
    }
  });
}

}  // namespace apop::auth
