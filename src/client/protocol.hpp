// I/O-free POP3 client helpers for `apop fetch` and `apop probe`: reply
// parsing, APOP challenge validation, CAPA, strict STAT/LIST/UIDL parsing, the
// multi-line body decoder, digests and the SASL client mechanisms, and the
// choice of authentication mechanism. protocol.cpp: replies, challenges,
// CAPA, listings, bodies; protocol_auth.cpp: the SASL mechanisms and the
// choice of mechanism.
//
// Contract: nothing here does I/O; every function is pure (or owns only its
// object's state) and safe to call from any thread on distinct objects.
// Everything a server sends is untrusted: parsers are strict, bounded, and
// report malformed input as Errc::invalid, never by exception or UB.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "client/account_state.hpp"
#include "common/limits.hpp"
#include "common/result.hpp"

namespace apop::client {

// ---------------------------------------------------------------------------
// Status lines
// ---------------------------------------------------------------------------

// "+OK text" / "-ERR [CODE] text" (RFC 1939 §3, RFC 2449 §8 response codes).
struct Reply {
  bool ok = false;
  std::string code;  // "AUTH", "SYS/TEMP", "IN-USE" ... without brackets; empty if none
  std::string text;  // after the status (and the code), leading space removed
};

// Parses a status line. Errc::invalid when it starts with neither "+OK" nor
// "-ERR" followed by end of line or a space (e.g. "+OKAY", "+ go").
Result<Reply> parse_reply(std::string_view line);

// A SASL continuation "+ BASE64" (RFC 5034 §4; "+" alone is an empty one).
// Returns the decoded bytes; Errc::invalid if not a continuation or not
// strict base64.
Result<std::string> parse_continuation(std::string_view line);
bool is_continuation(std::string_view line);

// ---------------------------------------------------------------------------
// APOP challenge (RFC 1939 §7), CVE-2007-1558 hardening
// ---------------------------------------------------------------------------

// Why `s` is not an acceptable APOP challenge, or "" when it is. Acceptable is
// exactly auth::is_valid_msg_id(): "<" dot-atom-text "@" (dot-atom-text /
// no-fold-literal) ">", octets 0x21-0x7E only, at most limits::kMaxTimestamp.
// (The server-side validator is strict enough; this adds the reason and
// is cross-checked against it, so the two can never disagree.)
std::string challenge_problem(std::string_view s);
inline bool is_valid_challenge(std::string_view s) { return challenge_problem(s).empty(); }

struct Challenge {
  enum class Status { absent, valid, invalid };
  Status status = Status::absent;
  std::string value;   // the token as sent (valid or not), brackets included
  std::string reason;  // for invalid
};

// The APOP challenge of a greeting line. absent: the greeting has no '<',
// '>' or '@' at all (the server does not offer APOP). invalid: something that
// looks like a challenge but fails challenge_problem() (including a missing
// bracket, which leaves a bare "id@host" behind).
Challenge extract_challenge(std::string_view greeting_line);

// RFC 1939 §7: lowercase hex MD5(challenge + secret).
std::string apop_digest(std::string_view challenge, std::string_view secret);

// ---------------------------------------------------------------------------
// CAPA (RFC 2449)
// ---------------------------------------------------------------------------

// One parser for fetch (STLS, PIPELINING, SASL choice) and probe (the audit
// report, client/probe.hpp): tags are case-insensitive, leading blanks and
// runs of spaces between arguments are skipped.
struct Capabilities {
  bool received = false;           // CAPA answered +OK (false: -ERR or not asked)
  std::vector<std::string> lines;  // raw capability lines, in order
  bool stls = false;
  bool user = false;
  bool top = false;
  bool uidl = false;
  bool pipelining = false;
  bool resp_codes = false;
  bool auth_resp_code = false;  // RFC 3206
  // Mechanisms, upper-cased, distinct, in server order; at most
  // limits::kMaxCapaSaslMechanisms.
  std::vector<std::string> sasl;
  // The arguments as sent (everything after the tag, leading blanks
  // removed; not sanitised: escape before printing).
  std::optional<std::string> implementation;
  std::optional<std::string> login_delay;
  std::optional<std::string> expire;
  bool has_sasl(std::string_view mech) const;
};

// Parses the capability lines of a CAPA reply (the body without its "."
// terminator, already dot-unstuffed). Unknown capabilities are kept in lines;
// lines after the first `max_lines` are ignored.
Capabilities parse_capa(const std::vector<std::string>& lines,
                        std::size_t max_lines = limits::kMaxCapaLines);

// ---------------------------------------------------------------------------
// STAT / LIST / UIDL (RFC 1939 §5, §7), the CVE-2005-2335 class
// ---------------------------------------------------------------------------

// Decimal digits only (no sign, no space), at least one, no overflow.
Result<std::uint64_t> parse_number(std::string_view s);

struct Stat {
  std::uint64_t count = 0;
  std::uint64_t octets = 0;
};
// The text after "+OK " of a STAT reply: "nn mm" (anything after a further
// space is ignored, as RFC 1939 allows). count above max_messages is
// Errc::invalid (the message names the count and the limit).
Result<Stat> parse_stat(std::string_view text,
                        std::uint64_t max_messages = limits::kMaxFetchListing);

// What a client keeps of one listing (issue 17 item 9: a hostile server
// announcing a million messages, then a million long lines). Lines are parsed
// as they arrive and never kept raw: LIST keeps two numbers per message, UIDL
// the unique-id, whose octets in total may not exceed max_bytes.
struct ListingLimits {
  std::uint64_t max_messages = limits::kMaxFetchListing;
  std::uint64_t max_bytes = limits::kMaxListingBytes;
};

// Multi-line LIST body fed one (unstuffed) line at a time: "msg SP size
// [SP ...]" (the rest is dropped); message numbers in 1..count, at most count
// lines, no duplicates.
// Keeps 16 octets per message (plus one bit per announced message).
class ListParser {
 public:
  using Sizes = std::vector<std::pair<std::uint64_t, std::uint64_t>>;  // (msg, size)
  explicit ListParser(std::uint64_t count) : count_(count) {}
  Result<void> feed(std::string_view line);
  const Sizes& sizes() const { return out_; }
  // Sorted by message number.
  Sizes take();

 private:
  std::uint64_t count_;
  Sizes out_;
  std::vector<bool> seen_;  // by message number, sized on the first line
};

// A parsed UIDL listing, compact: the unique-ids side by side in 1 MiB
// blocks, 16 octets per message besides (and 4 for the index by uid).
class UidlListing {
 public:
  std::size_t size() const { return entries_.size(); }
  // The i-th message (in message-number order) and its unique-id.
  std::uint64_t msg(std::size_t i) const { return entries_[i].msg; }
  std::string_view uid(std::size_t i) const { return view(entries_[i]); }
  // The unique-id of message `msg`; empty when the listing has none.
  std::string_view find(std::uint64_t msg) const;
  bool contains_uid(std::string_view uid) const;
  // Octets of unique-ids held.
  std::uint64_t bytes() const { return bytes_; }

 private:
  friend class UidlParser;
  static constexpr std::size_t kBlock = 1 << 20;
  struct Entry {
    std::uint64_t msg;
    std::uint64_t where;  // offset (block * kBlock + in-block) << 8 | length
  };
  std::string_view view(const Entry& e) const {
    const std::uint64_t off = e.where >> 8;
    return {blocks_[static_cast<std::size_t>(off / kBlock)].get() + off % kBlock,
            static_cast<std::size_t>(e.where & 0xff)};
  }
  std::vector<Entry> entries_;         // sorted by msg after finish()
  std::vector<std::uint32_t> by_uid_;  // indices into entries_, sorted by uid
  std::vector<std::unique_ptr<char[]>> blocks_;
  std::size_t used_ = kBlock;  // octets used in the last block
  std::uint64_t bytes_ = 0;
};

// Multi-line UIDL body fed one (unstuffed) line at a time: "msg SP uid"; the
// line at most limits::kMaxUidlListingLine octets, uid 1..70 octets
// 0x21-0x7E, numbers in 1..count, at most count lines, no duplicate numbers
// or uids (checked by finish()), at most max_bytes octets of uids in total.
class UidlParser {
 public:
  explicit UidlParser(std::uint64_t count, std::uint64_t max_bytes = limits::kMaxListingBytes)
      : count_(count), max_bytes_(max_bytes) {}
  Result<void> feed(std::string_view line);
  std::uint64_t bytes() const { return out_.bytes_; }
  std::size_t size() const { return out_.entries_.size(); }
  // After the last line: Errc::invalid when a unique-id repeats.
  Result<UidlListing> finish();

 private:
  std::uint64_t count_;
  std::uint64_t max_bytes_;
  UidlListing out_;
  std::vector<bool> seen_;  // by message number, sized on the first line
};

// The same over a whole body (tests, fuzzing). Returns msg -> size.
Result<std::map<std::uint64_t, std::uint64_t>> parse_list(const std::vector<std::string>& lines,
                                                          std::uint64_t count);
Result<std::map<std::uint64_t, std::string>> parse_uidl(const std::vector<std::string>& lines,
                                                        std::uint64_t count);
bool is_valid_uidl(std::string_view uid);

// ---------------------------------------------------------------------------
// Multi-line bodies (RFC 1939 §3)
// ---------------------------------------------------------------------------

// Decodes a multi-line body fed one line at a time (lines without their
// CRLF): removes dot-stuffing, joins lines with LF, stops at ".". Bounded:
// more than `max_octets` decoded octets is an error.
class BodyDecoder {
 public:
  explicit BodyDecoder(std::uint64_t max_octets) : max_(max_octets) {}
  // Returns true when `line` was the terminator. Errc::invalid when the body
  // grows beyond max_octets or a line is fed after the terminator.
  Result<bool> feed(std::string_view line);
  bool done() const { return done_; }
  // The message with LF line endings (every line, the last one included, ends
  // in LF).
  const std::string& text() const { return out_; }
  std::string take() { return std::move(out_); }
  // Octets as they were on the wire after unstuffing, with CRLF line ends:
  // what a server's LIST size counts.
  std::uint64_t wire_octets() const { return wire_; }
  std::uint64_t lines() const { return lines_; }

 private:
  std::uint64_t max_;
  std::string out_;
  std::uint64_t wire_ = 0;
  std::uint64_t lines_ = 0;
  bool done_ = false;
};

// Whether a decoded message is consistent with the size LIST announced:
// servers count CRLF line ends (most) or LF (some), and may add a final CRLF.
// False means the server lied about the size.
bool size_consistent(std::uint64_t announced, const BodyDecoder& body);

// ---------------------------------------------------------------------------
// SASL client mechanisms (RFC 5034 in POP3)
// ---------------------------------------------------------------------------

// SCRAM-SHA-256 client (RFC 5802, RFC 7677), no channel binding ("n,,").
// The username is escaped (',' and '=') but not SASLprep-normalised.
class ScramClient {
 public:
  // `nonce` empty: 24 CSPRNG octets, base64. A fixed nonce is for tests only.
  ScramClient(std::string user, std::string password, std::string nonce = {});
  ~ScramClient();
  ScramClient(const ScramClient&) = delete;
  ScramClient& operator=(const ScramClient&) = delete;

  // "n,,n=USER,r=NONCE"
  std::string client_first() const;
  // Parses server-first ("r=..,s=..,i=.."), checks that the nonce extends
  // ours, the salt is strict base64 and non-empty, and the iteration count is
  // within [kMinScramIterations, kMaxScramIterations]; returns client-final
  // with the proof. Errc::invalid for a malformed or unacceptable message.
  Result<std::string> client_final(std::string_view server_first);
  // Verifies "v=SIGNATURE" in constant time. Errc::auth_failed for "e=..." or
  // a wrong signature (the server does not know the password: an impostor).
  Result<void> verify_server_final(std::string_view server_final) const;

 private:
  std::string user_;
  std::string password_;
  std::string nonce_;
  std::string client_first_bare_;
  std::string auth_message_;
  std::string server_key_;
};

// CRAM-MD5 (RFC 2195): "USER hex(HMAC-MD5(secret, challenge))".
std::string cram_md5_response(std::string_view user, std::string_view secret,
                              std::string_view challenge);
// PLAIN (RFC 4616) without authorisation identity: "\0USER\0SECRET".
std::string plain_response(std::string_view user, std::string_view secret);

// OAUTHBEARER (RFC 7628 §3.1) initial client response, the GS2 header
// carrying the authorisation identity: "n,a=USER,\1host=HOST\1port=PORT\1
// auth=Bearer TOKEN\1\1" (',' and '=' in USER escaped as =2C and =3D, RFC
// 5801 §4). host= is left out when `host` is empty, port= when `port` is 0.
std::string oauthbearer_response(std::string_view user, std::string_view token,
                                 std::string_view host, std::uint16_t port);
// XOAUTH2 (Google's mechanism, the format Dovecot and Microsoft accept too):
// "user=USER\1auth=Bearer TOKEN\1\1".
std::string xoauth2_response(std::string_view user, std::string_view token);
// What a client sends after an OAuth error challenge to get the final -ERR:
// OAUTHBEARER the dummy "\1" (RFC 7628 §3.2.3), base64 "AQ=="; XOAUTH2 an
// empty response.
inline constexpr std::string_view kOAuthBearerErrorAck = "AQ==";

// The error a server sends when it rejects a token (RFC 7628 §3.2.2: a JSON
// object in the challenge). Every field is printable ASCII: the first
// limits::kMaxOAuthErrorField octets of the server's value, other octets as
// \xNN, "..." after a cut; empty when absent.
struct OAuthError {
  std::string status;  // "invalid_token", "insufficient_scope", Google's "401", ...
  std::string scope;
  std::string openid_configuration;
  // "invalid_token (scope: mail; openid-configuration: URL)"; "" when the
  // status is empty.
  std::string describe() const;
};
// Decodes the challenge's base64 text (as sent after "+ "), then the JSON
// object in it. Errc::invalid for bad base64, a decoded text longer than
// limits::kMaxOAuthErrorJson, text that is not UTF-8 JSON, a JSON value that
// is not an object, or an object without a "status" string (or number, as
// some servers send it). Never throws.
Result<OAuthError> decode_oauth_error(std::string_view base64);

// ---------------------------------------------------------------------------
// Mechanism choice and downgrade detection
// ---------------------------------------------------------------------------

// xoauth2 and oauthbearer take a bearer token where the others take a
// password; they are used only when asked for (never by automatic).
enum class AuthMech {
  automatic,
  apop,
  scram_sha_256,
  cram_md5,
  plain,
  login,
  user,
  xoauth2,
  oauthbearer
};
// Every mechanism, automatic first (for option lists and parse_auth_mech).
inline constexpr AuthMech kAllAuthMechs[] = {
    AuthMech::automatic, AuthMech::apop,    AuthMech::scram_sha_256,
    AuthMech::cram_md5,  AuthMech::plain,   AuthMech::login,
    AuthMech::user,      AuthMech::xoauth2, AuthMech::oauthbearer};
std::string_view auth_mech_name(AuthMech m);
// "auto", "apop", "scram-sha-256", ... (case-insensitive); nullopt if unknown.
std::optional<AuthMech> parse_auth_mech(std::string_view s);

struct AuthContext {
  bool tls = false;              // the session is inside TLS now
  Challenge challenge;           // from the greeting
  Capabilities caps;             // as seen inside TLS when TLS is active
  bool allow_plaintext = false;  // --allow-plaintext
};

// The mechanism to use. `requested` automatic picks, among what the server
// offers: SCRAM-SHA-256, APOP inside TLS, CRAM-MD5, PLAIN inside TLS, APOP in
// the clear, then LOGIN/USER inside TLS, and only with allow_plaintext PLAIN,
// LOGIN, USER in the clear. XOAUTH2 and OAUTHBEARER only when requested,
// and like PLAIN only inside TLS unless allow_plaintext (a bearer token is
// replayable). Errors:
//  - Errc::permanent: a security refusal (invalid APOP challenge for APOP,
//    plaintext password or bearer token without TLS and without allow_plaintext, or nothing
//    but such options offered);
//  - Errc::not_found: the server does not offer the requested mechanism (or
//    none at all).
Result<AuthMech> choose_auth(AuthMech requested, const AuthContext& ctx);

// What the server offered this session (for AccountState).
Offer make_offer(bool tls_active_or_offered, const Challenge& challenge, const Capabilities& caps);
// Non-empty description ("STLS/TLS", "APOP", "SCRAM-SHA-256") of what `now`
// lacks compared with `last`; empty when nothing was lost.
std::string downgrade(const Offer& last, const Offer& now);

}  // namespace apop::client
