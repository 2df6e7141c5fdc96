// `apop probe`: the I/O-free half of a security audit of a POP3 server.
//
// cmd_probe.cpp talks to the server (greetings, CAPA, STLS, implicit TLS; it
// never sends USER, PASS, APOP or AUTH) and fills a ProbeInput; analyze()
// turns that into findings, a grade and recommendations; to_json()/to_text()
// render the report (probe_analyze.cpp, probe_timestamps.cpp: the analysis;
// probe_render.cpp: the rendering). Everything here is pure: unit tests drive it with
// synthetic greetings. Thread-safety: all functions are reentrant, no shared
// state; results own their data.
//
// ## Timestamp entropy estimate (analyze_timestamps)
// The APOP timestamp is a msg-id `<LOCAL@DOMAIN>`. Its local part is split at
// '.' into fields; when every sample has the same number of fields, each
// field position is estimated on its own across the N samples (connections
// in order), otherwise the whole local part is one field. Per field:
//   - constant: identical in every sample                  -> 0 bits;
//   - counter:  all samples parse as integers (decimal, else hex, at most 64
//     bits), the sequence never decreases and increases at least once, with
//     at least kMinSamplesForTrend samples (a counter, a clock, a forking
//     server's pid)                                         -> log2(1 + largest step);
//   - numeric:  integers without a trend                   -> min(log2(1 + max - min),
//                                                               character estimate);
//   - random:   anything else                              -> character estimate:
//     (number of character positions, up to the longest value, that differ
//     between samples or are missing in some; every position when there is a
//     single sample) x log2(alphabet), the alphabet being
//     the smallest of decimal (10), hex (16), alphanumeric (62), base64 (64)
//     or printable ASCII (94) that holds every character seen in the field.
// A field whose samples all have the same sequence of digit and non-digit
// runs ("c99999995" ... "c100000002", "t<microseconds>") is also estimated
// run by run, and the smaller estimate is kept: a counter, clock or pid
// written next to letters is not counted as log2(alphabet) bits per changing
// character, nor misread as one big hex number (issue 17: a counter that
// increments by one per connection is 1 bit, not 9 changing characters).
// The estimate is the sum over fields; the domain is ignored (it is public).
// It is an upper bound of the real entropy (a CSPRNG cannot be told from a
// good PRNG by looking), and a lower bound is not claimed. Our own server's
// `<32 random hex + counter . pid @ host>` estimates >= 128 bits; RFC 1939's
// `<1896.697170952@dbc.mtview.ca.us>` style (pid.clock) a handful of bits.
//
// ## Grading rubric (the grade is the worst cap of all findings; A if none)
//   F  APOP timestamps repeat across connections (a captured APOP login can
//      be replayed); the greeting is not "+OK" (not a usable POP3 server).
//   D  a plaintext password login (USER/PASS, AUTH PLAIN, AUTH LOGIN) is
//      offered and no TLS works (neither STLS nor implicit TLS);
//      APOP offered with predictable timestamps (< kWeakBits bits);
//      certificate expired; TLS below 1.2; STLS response injection (bytes
//      after "+OK" before the handshake).
//   C  no TLS at all; plaintext logins offered before TLS although TLS
//      exists (the advice names loopback as the likely cause when the probe
//      connected over loopback, the grade is the same); timestamp not a
//      strict RFC 5322 msg-id; weak timestamps
//      (< kStrongBits bits); certificate not verifiable or not naming the
//      host (unless insecure_ok: then a note only); STLS offered but broken.
//   B  APOP (timestamp in the greeting) or CRAM-MD5 offered on a plain port
//      without STLS although TLS exists elsewhere (a passive eavesdropper
//      gets an offline-crackable MD5 response; an active one can choose the
//      challenge, CVE-2007-1558); certificate expires within
//      kExpirySoonDays days.
//   A  none of the above. Notes that cap nothing: APOP timestamp or CRAM-MD5
//      visible before STLS on a port with working STLS (the server may
//      refuse them before TLS, e.g. apop serve --md5-challenge-requires-tls,
//      formerly --apop-requires-tls, which a passive probe cannot see), APOP
//      or CRAM-MD5 without any TLS, no SCRAM-SHA-256, no CAPA,
//      IMPLEMENTATION revealing the software.
// APOP and CRAM-MD5 are one class of risk: both are MD5 challenge-responses
// over a plaintext-equivalent secret, which an eavesdropper cracks offline
// (hashcat: APOP is md5($salt.$pass), mode 20; CRAM-MD5 is mode 10200), so
// they are reported alike.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "client/protocol.hpp"
#include "client/transport.hpp"

namespace apop::client::probe {

// Below this many estimated bits a timestamp is predictable (grade D).
inline constexpr double kWeakBits = 32.0;
// Below this many bits it is weak (grade C); at or above it, fine.
inline constexpr double kStrongBits = 64.0;
// Counters/clocks are only detected with at least this many timestamps
// (with 2 samples, a random field "increases" with probability 1/2).
inline constexpr std::size_t kMinSamplesForTrend = 3;
// A certificate expiring within this many days caps the grade at B.
inline constexpr std::int64_t kExpirySoonDays = 14;
// Bounds on what the probe keeps from a server (lines of CAPA, connections).
inline constexpr std::size_t kMaxCapaLines = 128;
inline constexpr std::size_t kMaxConnections = 64;

// ---------------------------------------------------------------------------
// CAPA (RFC 2449, RFC 2595 STLS, RFC 5034 SASL, RFC 3206 AUTH-RESP-CODE)

// The client's parser (client/protocol.hpp), shared with fetch; the probe
// keeps at most kMaxCapaLines lines of a reply.
using Capabilities = client::Capabilities;

// Parses the body lines of a CAPA reply (status line and final "." excluded,
// already dot-unstuffed). Tags are case-insensitive.
inline Capabilities parse_capa(const std::vector<std::string>& lines) {
  return client::parse_capa(lines, kMaxCapaLines);
}

// ---------------------------------------------------------------------------
// Timestamps

enum class FieldKind { constant, counter, numeric, random };
const char* to_string(FieldKind k);

struct FieldEstimate {
  std::size_t index = 0;  // position of the '.'-separated field
  FieldKind kind = FieldKind::random;
  double bits = 0;
  std::string detail;  // e.g. "hex, 32 varying positions" / "step <= 3"
};

struct TimestampAnalysis {
  std::size_t greetings = 0;                  // greetings looked at
  std::vector<std::string> timestamps;        // found, in connection order
  std::size_t invalid = 0;                    // timestamps failing the strict msg-id check
  std::vector<std::string> invalid_examples;  // why, at most 3 (protocol.hpp challenge_problem)
  std::size_t distinct = 0;
  bool repeats = false;            // two connections got the same timestamp
  bool uniform_structure = false;  // same number of '.' fields everywhere
  std::vector<FieldEstimate> fields;
  double entropy_bits = 0;   // sum over fields (see the header comment)
  bool predictable = false;  // entropy_bits < kWeakBits
  bool weak = false;         // kWeakBits <= entropy_bits < kStrongBits
  bool offered() const { return !timestamps.empty(); }
};

// `greetings` are the greeting lines of consecutive connections.
TimestampAnalysis analyze_timestamps(const std::vector<std::string>& greetings);

// The estimate for a single field given its values in connection order
// (exposed for tests).
FieldEstimate estimate_field(const std::vector<std::string>& values);

// ---------------------------------------------------------------------------
// What cmd_probe observed

struct TlsObservation {
  bool attempted = false;
  bool ok = false;         // handshake completed (verified or not)
  std::string error;       // why it failed (when !ok), or the verify error
  TlsInfo info;            // when ok; verified/hostname_match as observed
  bool injection = false;  // STLS only: bytes after "+OK" before handshake
  Capabilities capa;       // CAPA inside TLS
};

struct ProbeInput {
  std::string host;
  std::uint16_t port = 110;
  // The host resolved to a loopback address (127.0.0.0/8, ::1): many servers
  // count loopback as secure and offer plaintext logins there (apop serve
  // unless --no-secure-loopback, Dovecot), which says nothing about what
  // remote clients are offered.
  bool loopback = false;
  bool reachable = false;                 // the plain port accepted a connection
  std::string connect_error;              // when !reachable
  std::vector<std::string> greetings;     // plain port, one per connection
  Capabilities capa;                      // plain port, before any TLS
  std::optional<std::string> stls_reply;  // status line to STLS, when sent
  TlsObservation stls;
  std::optional<std::uint16_t> tls_port;  // --tls-port
  bool tls_reachable = false;
  std::string tls_connect_error;
  std::vector<std::string> tls_greetings;  // implicit-TLS port
  TlsObservation implicit_tls;
  std::int64_t now = 0;      // UNIX seconds, for certificate expiry
  bool insecure_ok = false;  // an unverifiable certificate is a note, not a cap
};

enum class Severity { info, low, medium, high, critical };
const char* to_string(Severity s);

struct Finding {
  std::string id;  // stable key, e.g. "apop-timestamp-repeats"
  Severity severity = Severity::info;
  char cap = 'A';              // the best grade still possible with this finding
  std::string message;         // what was observed
  std::string recommendation;  // empty when there is nothing to do
};

struct Report {
  ProbeInput input;
  TimestampAnalysis apop_plain;                   // timestamps of the plain port
  TimestampAnalysis apop_tls;                     // timestamps of the implicit-TLS port
  bool apop_in_clear = false;                     // timestamp in a plaintext greeting
  bool apop_in_tls = false;                       // timestamp in an implicit-TLS greeting
  bool tls_available = false;                     // STLS or implicit TLS completed a handshake
  std::vector<std::string> plaintext_before_tls;  // "USER", "AUTH PLAIN", ...
  std::vector<Finding> findings;
  char grade = 'A';
  std::vector<std::string> recommendations;  // distinct, most severe first
};

Report analyze(const ProbeInput& in);

// Renders a report; `to_json` has the grade under the top-level key "grade".
std::string to_json(const Report& r);
std::string to_text(const Report& r);

}  // namespace apop::client::probe
