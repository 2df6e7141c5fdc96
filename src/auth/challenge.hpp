// APOP challenges (RFC 1939 §7 "timestamp") and their strict validation.
//
// A challenge is an RFC 5322 msg-id `<HEX.PID@HOSTNAME>`: HEX is 32 hex digits
// of CSPRNG output followed by a per-process counter (so two challenges of
// one process never repeat, even in theory), PID the process id.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace apop::auth {

// Thread-safety: next() may be called concurrently from any number of
// threads on one generator (the counter is a process-wide atomic, the CSPRNG
// is thread-safe). The generator owns a sanitised copy of the hostname.
class ChallengeGenerator {
 public:
  // `hostname` is sanitised to RFC 5322 dot-atom-text: characters outside
  // [A-Za-z0-9.-] are dropped, leading/trailing/repeated dots removed, and the
  // result truncated so that a challenge always fits limits::kMaxTimestamp.
  // An empty result becomes "localhost".
  explicit ChallengeGenerator(std::string hostname);

  // A fresh challenge, e.g. "<6f0c...e1a2.4711@mail.example.org>". Always
  // satisfies is_valid_msg_id(). Aborts if the CSPRNG fails.
  std::string next();

  // The sanitised hostname used in challenges.
  const std::string& hostname() const { return hostname_; }

 private:
  std::string hostname_;
};

// STRICT RFC 5322 msg-id check, used by the client to refuse crafted APOP
// challenges (CVE-2007-1558):
//   msg-id = "<" dot-atom-text "@" (dot-atom-text / no-fold-literal) ">"
// with atext per RFC 5322 §3.2.3, no leading/trailing/consecutive dots, and
// no-fold-literal = "[" *dtext "]" with dtext = %d33-90 / %d94-126. Only
// printable ASCII 0x21-0x7E; at most limits::kMaxTimestamp octets. No
// quoted-string local part, no CFWS, no obsolete forms. Pure; thread-safe.
bool is_valid_msg_id(std::string_view s);

// The last `<...>` token of a POP3 greeting ("+OK ... <ts>"), brackets
// included, or nullopt when the line does not start with "+OK" or has no such
// token. The token is NOT validated (use is_valid_msg_id). When the word that
// ends in the last '>' contains several '<', the token starts at the first of
// them, so nesting is passed on to (and refused by) the validator. The view
// points into `greeting_line`. Pure; thread-safe.
std::optional<std::string_view> find_timestamp(std::string_view greeting_line);

}  // namespace apop::auth
