// `apop probe`: rendering a Report as text (for a terminal: the server's
// bytes are escaped) and as JSON.
#include <nlohmann/json.hpp>
#include <span>
#include <sstream>

#include "client/probe.hpp"
#include "client/probe_internal.hpp"
#include "common/text.hpp"

namespace apop::client::probe {

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

using detail::fmt_bits;

// The report goes to a terminal and quotes the server's bytes: every byte
// outside printable ASCII (escape sequences, 8-bit, NUL) except the line
// ends becomes "\xNN", so a hostile server cannot drive the terminal.
std::string terminal_safe(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (ch == '\n' || (c >= 0x20 && c < 0x7f)) {
      out.push_back(ch);
    } else {
      out += "\\x";
      append_hex(out, std::span<const unsigned char>(&c, 1));
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
