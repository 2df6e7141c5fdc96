// `apop probe`: the analysis (client/probe.hpp, "Grading rubric"): the
// checks run on what cmd_probe observed, producing a Report value.
#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "client/probe.hpp"
#include "client/probe_internal.hpp"

namespace apop::client::probe {

namespace {

using detail::fmt_bits;

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

// STLS completed a handshake without response injection.
bool stls_works(const ProbeInput& in) { return in.stls.ok && !in.stls.injection; }

// The report's observations, before any finding.
Report observe(const ProbeInput& in) {
  Report r;
  r.input = in;
  r.apop_plain = analyze_timestamps(in.greetings);
  r.apop_tls = analyze_timestamps(in.tls_greetings);
  r.apop_in_clear = r.apop_plain.offered();
  r.apop_in_tls = r.apop_tls.offered();
  r.tls_available = stls_works(in) || in.implicit_tls.ok;
  return r;
}

// A greeting other than +OK on either port.
void check_greetings(Report& r, const ProbeInput& in) {
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
}

// APOP timestamps on each port, and the same one on both.
void check_apop_timestamps(Report& r, const ProbeInput& in) {
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
}

// Plaintext logins (USER, AUTH PLAIN, AUTH LOGIN, and the bearer-token
// mechanisms AUTH XOAUTH2 and AUTH OAUTHBEARER: a token is as replayable as a
// password) before TLS, no TLS at all, no CAPA.
void check_plaintext_logins(Report& r, const ProbeInput& in) {
  if (in.reachable && in.capa.received) {
    if (in.capa.user) r.plaintext_before_tls.emplace_back("USER");
    if (in.capa.has_sasl("PLAIN")) r.plaintext_before_tls.emplace_back("AUTH PLAIN");
    if (in.capa.has_sasl("LOGIN")) r.plaintext_before_tls.emplace_back("AUTH LOGIN");
    if (in.capa.has_sasl("XOAUTH2")) r.plaintext_before_tls.emplace_back("AUTH XOAUTH2");
    if (in.capa.has_sasl("OAUTHBEARER")) r.plaintext_before_tls.emplace_back("AUTH OAUTHBEARER");
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
}

// APOP / CRAM-MD5 before TLS: one class of risk. Both send an MD5
// challenge-response over a plaintext-equivalent secret that an
// eavesdropper cracks offline (and an active attacker can choose the APOP
// challenge, CVE-2007-1558). With working STLS on the same port an RFC 2595
// client upgrades first, and the server may refuse them before TLS (apop
// serve --md5-challenge-requires-tls still shows the timestamp, which APOP
// after STLS needs): a passive probe cannot tell, so that is a note.
// Without STLS on this port, they can only be used in the clear there: cap B.
void check_md5_challenges(Report& r, const ProbeInput& in) {
  const bool stls_ok = stls_works(in);
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
}

// STLS (injection, failure), implicit TLS, and both certificates.
void check_tls(Report& r, const ProbeInput& in) {
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
}

// Notes that cap nothing: no SCRAM-SHA-256, IMPLEMENTATION disclosed.
void add_notes(Report& r, const ProbeInput& in) {
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
}

// The grade (the worst cap) and the distinct recommendations, most severe
// first.
void grade(Report& r) {
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
}

}  // namespace

Report analyze(const ProbeInput& in) {
  Report r = observe(in);
  check_greetings(r, in);
  check_apop_timestamps(r, in);
  check_plaintext_logins(r, in);
  check_md5_challenges(r, in);
  check_tls(r, in);
  add_notes(r, in);
  grade(r);
  return r;
}

}  // namespace apop::client::probe
