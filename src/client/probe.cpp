#include "client/probe.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>

#include "auth/challenge.hpp"
#include "client/protocol.hpp"

namespace apop::client::probe {
namespace {

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (true) {
    std::size_t p = s.find(sep, start);
    if (p == std::string_view::npos) {
      out.emplace_back(s.substr(start));
      return out;
    }
    out.emplace_back(s.substr(start, p - start));
    start = p + 1;
  }
}

std::vector<std::string> words(std::string_view s) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && s[i] == ' ') ++i;
    std::size_t j = i;
    while (j < s.size() && s[j] != ' ') ++j;
    if (j > i) out.emplace_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

bool all_of(std::string_view s, bool (*pred)(char)) {
  return !s.empty() && std::all_of(s.begin(), s.end(), pred);
}
bool is_dec(char c) { return c >= '0' && c <= '9'; }
bool is_hex(char c) { return is_dec(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
bool is_alnum(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }
bool is_b64(char c) {
  return is_alnum(c) || c == '+' || c == '/' || c == '=' || c == '-' || c == '_';
}

// Parses s as an unsigned integer in `base` (10 or 16) without overflow.
std::optional<std::uint64_t> parse_uint(std::string_view s, int base) {
  std::size_t max_digits = base == 10 ? 19 : 16;
  if (s.empty() || s.size() > max_digits) return std::nullopt;
  std::uint64_t v = 0;
  for (char c : s) {
    unsigned d = 0;
    if (is_dec(c)) {
      d = static_cast<unsigned>(c - '0');
    } else if (base == 16 && c >= 'a' && c <= 'f') {
      d = static_cast<unsigned>(c - 'a' + 10);
    } else if (base == 16 && c >= 'A' && c <= 'F') {
      d = static_cast<unsigned>(c - 'A' + 10);
    } else {
      return std::nullopt;
    }
    v = v * static_cast<std::uint64_t>(base) + d;
  }
  return v;
}

// The smallest standard alphabet holding every character of every value,
// with its name.
std::pair<double, const char*> alphabet(const std::vector<std::string>& values) {
  auto every = [&](bool (*pred)(char)) {
    return std::all_of(values.begin(), values.end(),
                       [&](const std::string& v) { return std::all_of(v.begin(), v.end(), pred); });
  };
  if (every(is_dec)) return {10, "decimal"};
  auto lower_hex = [](char c) { return is_dec(c) || (c >= 'a' && c <= 'f'); };
  auto upper_hex = [](char c) { return is_dec(c) || (c >= 'A' && c <= 'F'); };
  if (every(+lower_hex) || every(+upper_hex)) return {16, "hex"};
  if (every(is_alnum)) return {62, "alphanumeric"};
  if (every(is_b64)) return {64, "base64"};
  return {94, "printable"};
}

double log2_1p(std::uint64_t v) { return std::log2(static_cast<double>(v) + 1.0); }

std::string fmt_bits(double b) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", b);
  return buf;
}

}  // namespace

// ---------------------------------------------------------------------------

bool Capabilities::has_sasl(std::string_view mech) const {
  std::string m = upper(mech);
  return std::find(sasl.begin(), sasl.end(), m) != sasl.end();
}

Capabilities parse_capa(const std::vector<std::string>& lines) {
  Capabilities c;
  c.received = true;
  for (const auto& line : lines) {
    if (c.lines.size() >= kMaxCapaLines) break;
    c.lines.push_back(line);
    auto w = words(line);
    if (w.empty()) continue;
    std::string tag = upper(w[0]);
    std::string rest;  // everything after the tag, leading spaces removed
    std::string_view lv(line);
    lv.remove_prefix(std::min(lv.find_first_not_of(' '), lv.size()));
    if (auto sp = lv.find(' '); sp != std::string_view::npos) {
      lv.remove_prefix(sp);
      lv.remove_prefix(std::min(lv.find_first_not_of(' '), lv.size()));
      rest = std::string(lv);
    }
    if (tag == "STLS") {
      c.stls = true;
    } else if (tag == "USER") {
      c.user = true;
    } else if (tag == "TOP") {
      c.top = true;
    } else if (tag == "UIDL") {
      c.uidl = true;
    } else if (tag == "PIPELINING") {
      c.pipelining = true;
    } else if (tag == "RESP-CODES") {
      c.resp_codes = true;
    } else if (tag == "AUTH-RESP-CODE") {
      c.auth_resp_code = true;
    } else if (tag == "SASL") {
      for (std::size_t i = 1; i < w.size(); ++i) {
        std::string m = upper(w[i]);
        if (std::find(c.sasl.begin(), c.sasl.end(), m) == c.sasl.end()) c.sasl.push_back(m);
      }
    } else if (tag == "IMPLEMENTATION") {
      c.implementation = rest;
    } else if (tag == "LOGIN-DELAY") {
      c.login_delay = rest;
    } else if (tag == "EXPIRE") {
      c.expire = rest;
    }
  }
  return c;
}

// ---------------------------------------------------------------------------

const char* to_string(FieldKind k) {
  switch (k) {
    case FieldKind::constant:
      return "constant";
    case FieldKind::counter:
      return "counter";
    case FieldKind::numeric:
      return "numeric";
    case FieldKind::random:
      return "random";
  }
  return "random";
}

const char* to_string(Severity s) {
  switch (s) {
    case Severity::info:
      return "info";
    case Severity::low:
      return "low";
    case Severity::medium:
      return "medium";
    case Severity::high:
      return "high";
    case Severity::critical:
      return "critical";
  }
  return "info";
}

FieldEstimate estimate_field(const std::vector<std::string>& values) {
  FieldEstimate f;
  if (values.empty()) {
    f.kind = FieldKind::constant;
    f.detail = "no samples";
    return f;
  }
  const bool several = values.size() >= 2;
  if (several && std::all_of(values.begin(), values.end(),
                             [&](const std::string& v) { return v == values[0]; })) {
    f.kind = FieldKind::constant;
    f.detail = "same in every connection";
    return f;
  }

  // Character estimate: varying positions x log2(alphabet).
  auto [alpha, alpha_name] = alphabet(values);
  std::size_t max_len = 0;
  for (const auto& v : values) max_len = std::max(max_len, v.size());
  std::size_t varying = 0;  // a position some value lacks counts as varying
  if (!several) {
    varying = values[0].size();
  } else {
    for (std::size_t i = 0; i < max_len; ++i) {
      bool differs = std::any_of(values.begin(), values.end(), [&](const std::string& v) {
        return i >= v.size() || i >= values[0].size() || v[i] != values[0][i];
      });
      if (differs) ++varying;
    }
  }
  const double char_bits = static_cast<double>(varying) * std::log2(alpha);

  // Integers: decimal if every value is decimal, else hex.
  int base = 0;
  if (std::all_of(values.begin(), values.end(),
                  [](const std::string& v) { return all_of(v, is_dec); })) {
    base = 10;
  } else if (std::all_of(values.begin(), values.end(),
                         [](const std::string& v) { return all_of(v, is_hex); })) {
    base = 16;
  }
  std::vector<std::uint64_t> nums;
  if (base != 0) {
    for (const auto& v : values) {
      auto n = parse_uint(v, base);
      if (!n) {
        nums.clear();
        break;
      }
      nums.push_back(*n);
    }
  }
  if (!nums.empty() && several) {
    const char* base_name = base == 10 ? "decimal" : "hex";
    bool nondecreasing = std::is_sorted(nums.begin(), nums.end());
    if (nondecreasing && values.size() >= kMinSamplesForTrend) {
      std::uint64_t step = 0;
      for (std::size_t i = 1; i < nums.size(); ++i) step = std::max(step, nums[i] - nums[i - 1]);
      f.kind = FieldKind::counter;
      f.bits = std::min(log2_1p(step), char_bits);
      f.detail = std::string(base_name) + " value increasing between connections, largest step " +
                 std::to_string(step);
      return f;
    }
    auto [lo, hi] = std::minmax_element(nums.begin(), nums.end());
    f.kind = FieldKind::numeric;
    f.bits = std::min(log2_1p(*hi - *lo), char_bits);
    f.detail = std::string(base_name) + " value, observed spread " + std::to_string(*hi - *lo);
    return f;
  }
  f.kind = FieldKind::random;
  f.bits = char_bits;
  f.detail = std::string(alpha_name) + ", " + std::to_string(varying) + " varying position(s)";
  return f;
}

namespace {

// Splits v into maximal runs of decimal digits and of other characters.
std::vector<std::string> digit_runs(std::string_view v) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < v.size()) {
    const bool digit = is_dec(v[i]);
    std::size_t j = i;
    while (j < v.size() && is_dec(v[j]) == digit) ++j;
    out.emplace_back(v.substr(i, j - i));
    i = j;
  }
  return out;
}

int randomness_rank(FieldKind k) {
  switch (k) {
    case FieldKind::constant:
      return 0;
    case FieldKind::counter:
      return 1;
    case FieldKind::numeric:
      return 2;
    case FieldKind::random:
      return 3;
  }
  return 3;
}

// A '.'-field whose samples all consist of the same sequence of digit and
// non-digit runs ("conn17x4711", "c99999995", "t1701916500123456") is
// estimated run by run: a counter, clock or pid run gets its counter/numeric
// estimate instead of log2(alphabet) bits for each of its changing characters
// (or a misreading of the whole field as one hex number; issue 17 item 12).
// Random text (hex, base64) has a different run structure in almost every
// sample and is left to the field estimate. nullopt when the field does not
// split so.
std::optional<FieldEstimate> estimate_by_runs(const std::vector<std::string>& values) {
  if (values.size() < 2) return std::nullopt;
  std::vector<std::vector<std::string>> runs;
  for (const auto& v : values) runs.push_back(digit_runs(v));
  const std::size_t n = runs[0].size();
  if (n < 2) return std::nullopt;
  const bool first_digit = !runs[0][0].empty() && is_dec(runs[0][0][0]);
  for (const auto& r : runs) {
    if (r.size() != n || r[0].empty() || is_dec(r[0][0]) != first_digit) return std::nullopt;
  }
  FieldEstimate f;
  f.kind = FieldKind::constant;
  std::string parts;
  for (std::size_t i = 0; i < n; ++i) {
    std::vector<std::string> column;
    for (const auto& r : runs) column.push_back(r[i]);
    FieldEstimate e = estimate_field(column);
    f.bits += e.bits;
    if (randomness_rank(e.kind) > randomness_rank(f.kind)) f.kind = e.kind;
    parts += (parts.empty() ? "" : "; ") + std::string(to_string(e.kind)) + " " + fmt_bits(e.bits);
  }
  f.detail = std::to_string(n) + " digit/non-digit runs (" + parts + ")";
  return f;
}

}  // namespace

TimestampAnalysis analyze_timestamps(const std::vector<std::string>& greetings) {
  TimestampAnalysis a;
  a.greetings = greetings.size();
  for (const auto& g : greetings) {
    auto ts = auth::find_timestamp(g);
    if (!ts) continue;
    a.timestamps.emplace_back(*ts);
    // The same strict check `apop fetch` applies before sending a digest.
    if (std::string why = challenge_problem(*ts); !why.empty()) {
      ++a.invalid;
      if (a.invalid_examples.size() < 3) a.invalid_examples.push_back(why);
    }
  }
  if (a.timestamps.empty()) return a;
  std::set<std::string> uniq(a.timestamps.begin(), a.timestamps.end());
  a.distinct = uniq.size();
  a.repeats = a.distinct < a.timestamps.size();

  // Local parts (between '<' and the last '@'; the whole inside without '@').
  std::vector<std::string> locals;
  for (const auto& t : a.timestamps) {
    std::string_view in(t);
    if (in.size() >= 2) in = in.substr(1, in.size() - 2);
    auto at = in.rfind('@');
    locals.emplace_back(at == std::string_view::npos ? in : in.substr(0, at));
  }
  std::vector<std::vector<std::string>> fields;
  for (const auto& l : locals) fields.push_back(split(l, '.'));
  a.uniform_structure = std::all_of(fields.begin(), fields.end(),
                                    [&](const auto& f) { return f.size() == fields[0].size(); });
  if (!a.uniform_structure) {
    fields.clear();
    for (const auto& l : locals) fields.push_back({l});
  }
  for (std::size_t i = 0; i < fields[0].size(); ++i) {
    std::vector<std::string> column;
    for (const auto& f : fields) column.push_back(f[i]);
    FieldEstimate e = estimate_field(column);
    if (auto by_runs = estimate_by_runs(column); by_runs && by_runs->bits < e.bits) {
      e = std::move(*by_runs);
    }
    e.index = i;
    a.entropy_bits += e.bits;
    a.fields.push_back(std::move(e));
  }
  if (a.repeats) a.entropy_bits = 0;  // a repeat is the end of any estimate
  a.predictable = a.entropy_bits < kWeakBits;
  a.weak = !a.predictable && a.entropy_bits < kStrongBits;
  return a;
}

// ---------------------------------------------------------------------------

namespace {

void add(Report& r, std::string id, Severity sev, char cap, std::string message,
         std::string rec = {}) {
  r.findings.push_back(Finding{std::move(id), sev, cap, std::move(message), std::move(rec)});
}

bool old_tls(const std::string& protocol) {
  return protocol == "SSLv2" || protocol == "SSLv3" || protocol == "TLSv1" ||
         protocol == "TLSv1.0" || protocol == "TLSv1.1";
}

void check_certificate(Report& r, const TlsObservation& t, const std::string& where,
                       const ProbeInput& in) {
  if (!t.ok) return;
  const auto& i = t.info;
  if (old_tls(i.protocol)) {
    add(r, "tls-old-protocol", Severity::high, 'D', where + " negotiated " + i.protocol,
        "Disable SSLv3, TLS 1.0 and TLS 1.1; require TLS 1.2 or later.");
  }
  if (!i.verified || !i.hostname_match) {
    std::string what =
        !i.verified ? "certificate does not verify" : "certificate does not name " + in.host;
    if (!i.verify_error.empty()) what += " (" + i.verify_error + ")";
    if (in.insecure_ok) {
      add(r, "tls-certificate-unverified", Severity::info, 'A',
          where + ": " + what + "; accepted (--insecure-ok)");
    } else {
      add(r, "tls-certificate-unverified", Severity::medium, 'C', where + ": " + what,
          "Use a certificate from a CA the clients trust, naming the host clients connect to (" +
              in.host + ").");
    }
  }
  if (i.not_after != 0 && in.now != 0) {
    std::int64_t days = (i.not_after - in.now) / 86400;
    if (i.not_after <= in.now) {
      add(r, "tls-certificate-expired", Severity::high, 'D', where + ": certificate expired",
          "Renew the TLS certificate (and automate renewal).");
    } else if (days < kExpirySoonDays) {
      add(r, "tls-certificate-expiring", Severity::low, 'B',
          where + ": certificate expires in " + std::to_string(days) + " day(s)",
          "Renew the TLS certificate soon.");
    }
  }
}

void check_timestamps(Report& r, const TimestampAnalysis& a, const std::string& where) {
  if (!a.offered()) return;
  if (a.repeats) {
    add(r, "apop-timestamp-repeats", Severity::critical, 'F',
        where + ": the same APOP timestamp was sent to different connections (" +
            std::to_string(a.distinct) + " distinct of " + std::to_string(a.timestamps.size()) +
            "): a captured APOP login can be replayed",
        "Generate a fresh, unpredictable APOP timestamp for every connection (at least 128 random "
        "bits).");
  } else if (a.predictable) {
    add(r, "apop-timestamp-predictable", Severity::high, 'D',
        where + ": APOP timestamps are predictable (about " + fmt_bits(a.entropy_bits) +
            " bits estimated across connections)",
        "Fix predictable APOP timestamps: include at least 128 bits from a CSPRNG (not only pid "
        "and clock).");
  } else if (a.weak) {
    add(r, "apop-timestamp-weak", Severity::medium, 'C',
        where + ": APOP timestamps have little entropy (about " + fmt_bits(a.entropy_bits) +
            " bits estimated)",
        "Fix weak APOP timestamps: include at least 128 bits from a CSPRNG.");
  }
  if (a.invalid > 0) {
    add(r, "apop-timestamp-invalid", Severity::medium, 'C',
        where + ": " + std::to_string(a.invalid) +
            " timestamp(s) are not strict RFC 5322 msg-ids (" + a.invalid_examples.front() +
            "); strict clients refuse them",
        "Send APOP timestamps of the form <random.pid@hostname> (printable ASCII, RFC 5322 "
        "msg-id).");
  }
  if (!a.repeats) {
    std::vector<std::string> predictable_parts;
    for (const auto& f : a.fields) {
      if (f.kind == FieldKind::constant || f.kind == FieldKind::counter) {
        predictable_parts.push_back("field " + std::to_string(f.index + 1) + " " +
                                    to_string(f.kind));
      }
    }
    if (!predictable_parts.empty() && !a.predictable && !a.weak) {
      std::string list;
      for (const auto& p : predictable_parts) list += (list.empty() ? "" : ", ") + p;
      add(r, "apop-timestamp-structure", Severity::info, 'A',
          where + ": timestamps contain predictable parts (" + list +
              "), but enough random ones (about " + fmt_bits(a.entropy_bits) + " bits)");
    }
  }
}

}  // namespace

Report analyze(const ProbeInput& in) {
  Report r;
  r.input = in;
  r.apop_plain = analyze_timestamps(in.greetings);
  r.apop_tls = analyze_timestamps(in.tls_greetings);
  r.apop_in_clear = r.apop_plain.offered();
  r.apop_in_tls = r.apop_tls.offered();
  const bool stls_ok = in.stls.ok && !in.stls.injection;
  r.tls_available = stls_ok || in.implicit_tls.ok;

  // Greetings.
  auto not_ok = [](const std::vector<std::string>& gs) {
    return std::any_of(gs.begin(), gs.end(),
                       [](const std::string& g) { return g.rfind("+OK", 0) != 0; });
  };
  if ((in.reachable && (in.greetings.empty() || not_ok(in.greetings))) ||
      (in.tls_reachable && in.implicit_tls.ok &&
       (in.tls_greetings.empty() || not_ok(in.tls_greetings)))) {
    add(r, "greeting-not-ok", Severity::critical, 'F', "the server did not greet with +OK",
        "Check that this is a working POP3 service.");
  }

  // APOP timestamps.
  check_timestamps(r, r.apop_plain, "port " + std::to_string(in.port));
  if (in.tls_port) check_timestamps(r, r.apop_tls, "TLS port " + std::to_string(*in.tls_port));
  if (r.apop_plain.offered() && r.apop_tls.offered() && !r.apop_plain.repeats &&
      !r.apop_tls.repeats) {
    std::set<std::string> seen(r.apop_plain.timestamps.begin(), r.apop_plain.timestamps.end());
    for (const auto& t : r.apop_tls.timestamps) {
      if (seen.count(t)) {
        add(r, "apop-timestamp-repeats", Severity::critical, 'F',
            "the same APOP timestamp was sent on the plain and the TLS port: a captured login can "
            "be replayed",
            "Generate a fresh, unpredictable APOP timestamp for every connection (at least 128 "
            "random bits).");
        break;
      }
    }
  }

  // Plaintext logins before TLS.
  if (in.reachable && in.capa.received) {
    if (in.capa.user) r.plaintext_before_tls.emplace_back("USER");
    if (in.capa.has_sasl("PLAIN")) r.plaintext_before_tls.emplace_back("AUTH PLAIN");
    if (in.capa.has_sasl("LOGIN")) r.plaintext_before_tls.emplace_back("AUTH LOGIN");
  }
  std::string plain_list;
  for (const auto& p : r.plaintext_before_tls) plain_list += (plain_list.empty() ? "" : ", ") + p;

  // Why the server offers plaintext logins before TLS: the advice names what
  // the probe can know. Over loopback the likely cause is that the server
  // counts loopback as secure (apop serve does unless --no-secure-loopback;
  // Dovecot too), and the probe cannot see what a remote client is offered:
  // naming a server flag as the cause would be a guess. From elsewhere it is
  // the server's policy for this port. The grade is the same either way (a
  // probe over loopback cannot tell a loopback-only offer from a general one).
  const std::string why_offered =
      in.loopback ? "; the probe connected over loopback, which many servers count as secure "
                    "(apop serve unless --no-secure-loopback; Dovecot treats local connections "
                    "as secured), so remote clients may not be offered them"
                  : " to a non-loopback client: the server's policy for this port";
  const std::string disable_advice =
      in.loopback
          ? "The probe connected over loopback: probe from another host to see what remote "
            "clients are offered; if they are offered "
            "plaintext logins before TLS too, disable them (Dovecot: disable_plaintext_auth = "
            "yes; apop serve offers them to remote clients only with --allow-plaintext-auth). To "
            "refuse them over loopback as well: apop serve --no-secure-loopback (Dovecot: "
            "ssl = required)."
          : "Disable plaintext logins before TLS (Dovecot: disable_plaintext_auth = yes, 2.4: "
            "auth_allow_cleartext = no; apop serve offers them to remote clients only with "
            "--allow-plaintext-auth, or when a PROXY-protocol proxy reports a loopback client).";
  if (!r.tls_available) {
    if (!r.plaintext_before_tls.empty()) {
      add(r, "plaintext-login-no-tls", Severity::high, 'D',
          "passwords can only be sent in the clear: " + plain_list +
              " offered and no TLS available" + why_offered,
          "Use TLS (STLS and/or implicit TLS on port 995). " + disable_advice);
    } else {
      add(r, "no-tls", Severity::medium, 'C',
          "no TLS: neither STLS nor implicit TLS works; mail crosses in the clear",
          "Use TLS: offer STLS (RFC 2595) and implicit TLS on port 995 (RFC 8314).");
    }
  } else if (!r.plaintext_before_tls.empty()) {
    add(r, "plaintext-login-before-tls", Severity::medium, 'C',
        "plaintext logins offered before TLS: " + plain_list + why_offered +
            " (a client may send its password before STLS)",
        disable_advice);
  }
  if (in.reachable && !in.capa.received) {
    add(r, "capa-missing", Severity::low, 'A',
        "the server does not answer CAPA (RFC 2449); plaintext USER is likely",
        "Support CAPA so clients can see STLS and SASL before logging in.");
  }

  // APOP / CRAM-MD5 before TLS: one class of risk. Both send an MD5
  // challenge-response over a plaintext-equivalent secret that an
  // eavesdropper cracks offline (and an active attacker can choose the APOP
  // challenge, CVE-2007-1558). With working STLS on the same port an RFC 2595
  // client upgrades first, and the server may refuse them before TLS (apop
  // serve --md5-challenge-requires-tls still shows the timestamp, which APOP
  // after STLS needs): a passive probe cannot tell, so that is a note.
  // Without STLS on this port, they can only be used in the clear there: cap B.
  const std::string md5_policy =
      "apop serve --md5-challenge-requires-tls (formerly --apop-requires-tls) refuses both APOP "
      "and CRAM-MD5 before TLS";
  const std::string md5_risk =
      "an MD5 challenge-response over a plaintext-equivalent secret, which an eavesdropper "
      "cracks offline";
  const bool cram_in_clear = in.capa.received && in.capa.has_sasl("CRAM-MD5");
  if (r.tls_available) {
    if (r.apop_in_clear && stls_ok) {
      add(r, "apop-before-stls", Severity::low, 'A',
          "the APOP timestamp is visible before STLS: a client that sends APOP without STLS "
          "exposes " +
              md5_risk +
              " (whether the server refuses APOP before TLS cannot be seen without "
              "logging in)",
          "Make sure APOP and CRAM-MD5 are refused before TLS (" + md5_policy +
              "; a passive probe cannot check this).");
    } else if (r.apop_in_clear) {
      add(r, "apop-outside-tls", Severity::low, 'B',
          "APOP is offered on a port without STLS: " + md5_risk +
              ", and an active attacker can choose the challenge (CVE-2007-1558)",
          "Require APOP and CRAM-MD5 inside TLS (" + md5_policy + "), or offer STLS on this port.");
    }
    if (cram_in_clear) {
      if (stls_ok) {
        add(r, "cram-md5-before-stls", Severity::low, 'A',
            "CRAM-MD5 is advertised before STLS: a client using it without STLS exposes " +
                md5_risk +
                " (whether the server refuses it before TLS cannot be seen without "
                "logging in)",
            "Make sure APOP and CRAM-MD5 are refused before TLS (" + md5_policy +
                "; a passive probe cannot check this), or prefer SCRAM-SHA-256.");
      } else {
        add(r, "cram-md5-outside-tls", Severity::low, 'B',
            "CRAM-MD5 is offered on a port without STLS: " + md5_risk,
            "Require APOP and CRAM-MD5 inside TLS (" + md5_policy +
                "), or offer STLS on this port; prefer SCRAM-SHA-256.");
      }
    }
  } else {
    if (r.apop_in_clear) {
      add(r, "apop-in-clear", Severity::info, 'A',
          "APOP is offered without TLS: " + md5_risk + " if the secret is weak",
          "Set up TLS, then require APOP and CRAM-MD5 inside it (" + md5_policy + ").");
    }
    if (cram_in_clear) {
      add(r, "cram-md5-in-clear", Severity::info, 'A',
          "CRAM-MD5 is offered without TLS: " + md5_risk + " if the secret is weak",
          "Set up TLS, then require APOP and CRAM-MD5 inside it (" + md5_policy + ").");
    }
  }

  // STLS.
  if (in.capa.stls && in.stls.attempted) {
    if (in.stls.injection) {
      add(r, "stls-injection", Severity::high, 'D',
          "the server sent data after +OK to STLS, before the TLS handshake (response injection)",
          "Fix the STLS implementation: nothing may follow +OK before the handshake (CVE-2011-0411 "
          "class).");
    } else if (!in.stls.ok) {
      add(r, "stls-broken", Severity::medium, 'C', "STLS is advertised but fails: " + in.stls.error,
          "Fix the STLS configuration (certificate, key, protocols).");
    }
  }
  if (in.stls.ok) check_certificate(r, in.stls, "STLS", in);
  if (in.tls_port) {
    if (!in.tls_reachable) {
      add(r, "implicit-tls-unreachable", Severity::info, 'A',
          "TLS port " + std::to_string(*in.tls_port) + " not reachable: " + in.tls_connect_error);
    } else if (!in.implicit_tls.ok) {
      add(r, "implicit-tls-broken", Severity::medium, 'C',
          "implicit TLS on port " + std::to_string(*in.tls_port) +
              " fails: " + in.implicit_tls.error,
          "Fix the TLS configuration of the implicit-TLS listener.");
    } else {
      check_certificate(r, in.implicit_tls, "TLS port " + std::to_string(*in.tls_port), in);
    }
  }

  // Notes that cap nothing.
  auto any_capa = [&](auto pred) {
    return (in.capa.received && pred(in.capa)) ||
           (in.stls.ok && in.stls.capa.received && pred(in.stls.capa)) ||
           (in.implicit_tls.ok && in.implicit_tls.capa.received && pred(in.implicit_tls.capa));
  };
  if (!any_capa([](const Capabilities& c) { return c.has_sasl("SCRAM-SHA-256"); })) {
    add(r, "no-scram", Severity::info, 'A', "SCRAM-SHA-256 (RFC 7677) is not offered",
        "Offer SCRAM-SHA-256: the server stores no password equivalent and the client proves the "
        "server knows it.");
  }
  if (any_capa([](const Capabilities& c) { return c.implementation.has_value(); })) {
    std::string impl;
    for (const Capabilities* c : {&in.capa, &in.stls.capa, &in.implicit_tls.capa}) {
      if (c->implementation) {
        impl = *c->implementation;
        break;
      }
    }
    add(r, "implementation-disclosed", Severity::info, 'A',
        "IMPLEMENTATION discloses the server software: " + impl,
        "Consider hiding the server software and version (apop serve --no-implementation).");
  }

  // Grade and recommendations.
  std::stable_sort(r.findings.begin(), r.findings.end(), [](const Finding& a, const Finding& b) {
    return static_cast<int>(a.severity) > static_cast<int>(b.severity);
  });
  for (const auto& f : r.findings) {
    r.grade = std::max(r.grade, f.cap);
    if (!f.recommendation.empty() && std::find(r.recommendations.begin(), r.recommendations.end(),
                                               f.recommendation) == r.recommendations.end()) {
      r.recommendations.push_back(f.recommendation);
    }
  }
  return r;
}

// ---------------------------------------------------------------------------

namespace {

using nlohmann::json;

json capa_json(const Capabilities& c) {
  json j;
  j["received"] = c.received;
  j["lines"] = c.lines;
  j["stls"] = c.stls;
  j["user"] = c.user;
  j["top"] = c.top;
  j["uidl"] = c.uidl;
  j["pipelining"] = c.pipelining;
  j["resp_codes"] = c.resp_codes;
  j["auth_resp_code"] = c.auth_resp_code;
  j["sasl"] = c.sasl;
  j["implementation"] = c.implementation ? json(*c.implementation) : json(nullptr);
  j["login_delay"] = c.login_delay ? json(*c.login_delay) : json(nullptr);
  j["expire"] = c.expire ? json(*c.expire) : json(nullptr);
  return j;
}

json ts_json(const TimestampAnalysis& a) {
  json j;
  j["offered"] = a.offered();
  j["greetings"] = a.greetings;
  j["timestamps"] = a.timestamps;
  j["valid_msg_id"] = a.offered() && a.invalid == 0;
  j["invalid"] = a.invalid;
  j["distinct"] = a.distinct;
  j["repeats"] = a.repeats;
  j["uniform_structure"] = a.uniform_structure;
  j["entropy_bits"] = std::round(a.entropy_bits * 10) / 10;
  j["predictable"] = a.offered() && a.predictable;
  j["weak"] = a.weak;
  json fields = json::array();
  for (const auto& f : a.fields) {
    fields.push_back({{"index", f.index},
                      {"kind", to_string(f.kind)},
                      {"bits", std::round(f.bits * 10) / 10},
                      {"detail", f.detail}});
  }
  j["fields"] = fields;
  return j;
}

json tls_json(const TlsObservation& t, std::int64_t now) {
  json j;
  j["attempted"] = t.attempted;
  j["ok"] = t.ok;
  j["error"] = t.error;
  if (t.ok) {
    j["protocol"] = t.info.protocol;
    j["cipher"] = t.info.cipher;
    j["verified"] = t.info.verified;
    j["hostname_match"] = t.info.hostname_match;
    j["verify_error"] = t.info.verify_error;
    j["subject"] = t.info.subject;
    j["issuer"] = t.info.issuer;
    j["not_after"] = t.info.not_after;
    if (t.info.not_after != 0 && now != 0) {
      j["days_left"] = (t.info.not_after - now) / 86400;
    }
    j["capabilities"] = capa_json(t.capa);
  }
  j["injection"] = t.injection;
  return j;
}

}  // namespace

std::string to_json(const Report& r) {
  const auto& in = r.input;
  json j;
  j["grade"] = std::string(1, r.grade);
  j["host"] = in.host;
  j["port"] = in.port;
  j["loopback"] = in.loopback;
  j["reachable"] = in.reachable;
  if (!in.reachable) j["connect_error"] = in.connect_error;
  j["greeting"] = in.greetings.empty() ? json(nullptr) : json(in.greetings.front());
  j["connections"] = in.greetings.size();
  j["apop"] = {{"offered", r.apop_in_clear || r.apop_in_tls},
               {"in_clear", r.apop_in_clear},
               {"in_tls", r.apop_in_tls},
               {"plain", ts_json(r.apop_plain)},
               {"tls", ts_json(r.apop_tls)}};
  j["capabilities"] = capa_json(in.capa);
  j["plaintext_before_tls"] = r.plaintext_before_tls;
  j["tls_available"] = r.tls_available;
  j["stls"] = tls_json(in.stls, in.now);
  j["stls"]["offered"] = in.capa.stls;
  j["stls"]["reply"] = in.stls_reply ? json(*in.stls_reply) : json(nullptr);
  if (in.tls_port) {
    j["implicit_tls"] = tls_json(in.implicit_tls, in.now);
    j["implicit_tls"]["port"] = *in.tls_port;
    j["implicit_tls"]["reachable"] = in.tls_reachable;
    if (!in.tls_reachable) j["implicit_tls"]["connect_error"] = in.tls_connect_error;
    j["implicit_tls"]["greeting"] =
        in.tls_greetings.empty() ? json(nullptr) : json(in.tls_greetings.front());
  } else {
    j["implicit_tls"] = nullptr;
  }
  json findings = json::array();
  for (const auto& f : r.findings) {
    findings.push_back({{"id", f.id},
                        {"severity", to_string(f.severity)},
                        {"cap", std::string(1, f.cap)},
                        {"message", f.message},
                        {"recommendation", f.recommendation}});
  }
  j["findings"] = findings;
  j["recommendations"] = r.recommendations;
  // Greetings, CAPA lines and certificate names are the server's bytes: an
  // invalid UTF-8 sequence becomes U+FFFD instead of making dump() throw
  // (nlohmann::json's default), which would abort `apop probe --json`.
  return j.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

namespace {

// The report goes to a terminal and quotes the server's bytes: every byte
// outside printable ASCII (escape sequences, 8-bit, NUL) except the line
// ends becomes "\xNN", so a hostile server cannot drive the terminal.
std::string terminal_safe(std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(text.size());
  for (char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (ch == '\n' || (c >= 0x20 && c < 0x7f)) {
      out.push_back(ch);
    } else {
      out += "\\x";
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

void text_ts(std::ostringstream& o, const TimestampAnalysis& a, const std::string& where) {
  o << "APOP (" << where << "): ";
  if (!a.offered()) {
    o << "not offered (no timestamp in " << a.greetings << " greeting(s))\n";
    return;
  }
  o << "offered; " << a.timestamps.size() << " timestamp(s), " << a.distinct << " distinct"
    << (a.repeats ? " - REPEATED" : "") << "; "
    << (a.invalid == 0 ? "strict msg-id" : "NOT a strict msg-id")
    << "\n  example: " << a.timestamps.front()
    << "\n  entropy estimate: " << fmt_bits(a.entropy_bits) << " bits"
    << (a.predictable ? " - PREDICTABLE"
        : a.weak      ? " - weak"
                      : "")
    << "\n";
  for (const auto& f : a.fields) {
    o << "    field " << f.index + 1 << ": " << to_string(f.kind) << ", " << fmt_bits(f.bits)
      << " bits (" << f.detail << ")\n";
  }
}

void text_capa(std::ostringstream& o, const Capabilities& c, const std::string& where) {
  o << "CAPA (" << where << "): ";
  if (!c.received) {
    o << "not supported\n";
    return;
  }
  for (std::size_t i = 0; i < c.lines.size(); ++i) o << (i ? ", " : "") << c.lines[i];
  o << "\n";
}

void text_tls(std::ostringstream& o, const TlsObservation& t, std::int64_t now) {
  if (!t.ok) {
    o << "failed: " << t.error << "\n";
    return;
  }
  o << t.info.protocol << " " << t.info.cipher << "\n  certificate: " << t.info.subject
    << " (issuer " << t.info.issuer << ")\n  verified: " << (t.info.verified ? "yes" : "no")
    << (t.info.verify_error.empty() ? "" : " (" + t.info.verify_error + ")")
    << "; hostname match: " << (t.info.hostname_match ? "yes" : "no");
  if (t.info.not_after != 0 && now != 0) o << "; days left: " << (t.info.not_after - now) / 86400;
  o << "\n";
}

}  // namespace

std::string to_text(const Report& r) {
  const auto& in = r.input;
  std::ostringstream o;
  o << "apop probe " << in.host << ":" << in.port << "\n\n";
  if (!in.reachable) {
    o << "port " << in.port << ": not reachable: " << in.connect_error << "\n";
  } else {
    o << "greeting: " << (in.greetings.empty() ? "(none)" : in.greetings.front()) << "\n";
    o << "connections: " << in.greetings.size() << "\n";
    text_ts(o, r.apop_plain, "port " + std::to_string(in.port));
    text_capa(o, in.capa, "before TLS");
    o << "plaintext logins before TLS: ";
    if (r.plaintext_before_tls.empty()) {
      o << "none";
    } else {
      for (std::size_t i = 0; i < r.plaintext_before_tls.size(); ++i)
        o << (i ? ", " : "") << r.plaintext_before_tls[i];
    }
    o << "\nSTLS: ";
    if (!in.capa.stls) {
      o << "not offered\n";
    } else if (in.stls.injection) {
      o << "INJECTION: data after +OK before the handshake\n";
    } else {
      text_tls(o, in.stls, in.now);
      if (in.stls.ok) text_capa(o, in.stls.capa, "after STLS");
    }
  }
  if (in.tls_port) {
    o << "implicit TLS (port " << *in.tls_port << "): ";
    if (!in.tls_reachable) {
      o << "not reachable: " << in.tls_connect_error << "\n";
    } else {
      text_tls(o, in.implicit_tls, in.now);
      if (in.implicit_tls.ok) {
        o << "greeting: " << (in.tls_greetings.empty() ? "(none)" : in.tls_greetings.front())
          << "\n";
        text_ts(o, r.apop_tls, "TLS port " + std::to_string(*in.tls_port));
        text_capa(o, in.implicit_tls.capa, "implicit TLS");
      }
    }
  }
  o << "\nfindings:\n";
  if (r.findings.empty()) o << "  none\n";
  for (const auto& f : r.findings) {
    o << "  [" << to_string(f.severity) << "] " << f.message << "\n";
  }
  o << "\nrecommendations:\n";
  if (r.recommendations.empty()) o << "  none\n";
  for (const auto& rec : r.recommendations) o << "  - " << rec << "\n";
  o << "\ngrade: " << r.grade << "\n";
  return terminal_safe(o.str());
}

}  // namespace apop::client::probe
