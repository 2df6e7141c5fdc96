// I/O-free pieces of the SMTP/LMTP client of `apop fetch --to lmtp:/smtp:`
// (client/handoff.hpp): the reply parser (RFC 5321 §4.2), enhanced status
// codes (RFC 3463), the EHLO/LHLO keyword list (RFC 5321 §4.1.1.1, RFC 2033
// §4.1), envelope paths, and the DATA encoding (CRLF, dot-stuffing, §4.5.2).
// Bytes in, values out: unit tests and fuzz/fuzz_smtp_reply.cpp drive them.
//
// Contract: nothing here trusts the server. A reply line longer than
// limits::kMaxSmtpReplyLine, more than limits::kMaxSmtpReplyLines lines, a
// malformed code or a continuation with another code is an Errc::invalid
// error, never a crash; texts meant for messages are printable ASCII.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"

namespace apop::client::smtp {

struct Reply {
  int code = 0;          // 200..599 (first digit 2-5, second 0-5)
  std::string enhanced;  // "5.1.1" when the first line starts with one of the code's class
  std::vector<std::string> lines;  // the text of every line (after "NNN-"/"NNN "), raw
  bool positive() const { return code >= 200 && code < 300; }
  bool transient() const { return code >= 400 && code < 500; }
  bool permanent() const { return code >= 500 && code < 600; }
  // "550 5.1.1 no such user" (lines joined by " / "): printable ASCII, cut
  // at `max` octets; for error messages and the DSN's Diagnostic-Code.
  std::string shown(std::size_t max = 200) const;
};

// Collects the lines of one reply. feed() takes one line without its CRLF
// and returns true once the reply is complete (its last line "NNN text" or
// "NNN" was fed); reply() is then valid until reset().
class ReplyParser {
 public:
  Result<bool> feed(std::string_view line);
  const Reply& reply() const { return reply_; }
  void reset();

 private:
  Reply reply_;
  bool done_ = false;
};

// Parses a whole reply from wire bytes (lines ending in CRLF or LF); the
// convenience for tests and the fuzzer. Errc::invalid for a malformed or
// incomplete reply; `consumed` (if given) gets the octets used.
Result<Reply> parse_reply(std::string_view wire, std::size_t* consumed = nullptr);

// "5.1.1" at the start of `text` (RFC 3463 §2: class "." subject "."
// detail, class 2/4/5, subject and detail 1-3 digits, followed by a space or
// the end); empty if there is none.
std::string enhanced_code(std::string_view text);

// What an EHLO/LHLO reply offers (keywords case-insensitive; the first line
// is the greeting, not a keyword).
struct Extensions {
  bool pipelining = false;            // RFC 2920
  bool size = false;                  // RFC 1870
  std::uint64_t size_max = 0;         // SIZE's parameter, 0: no limit given
  bool eightbitmime = false;          // RFC 6152
  bool chunking = false;              // RFC 3030 BDAT
  bool enhanced_codes = false;        // RFC 2034 ENHANCEDSTATUSCODES
  std::vector<std::string> keywords;  // upper-case, as offered
};
Extensions parse_extensions(const Reply& ehlo);

// Whether `address` may go between the angle brackets of MAIL FROM/RCPT TO:
// non-empty, at most limits::kMaxSmtpPath - 2 octets, printable ASCII
// without space, '<' and '>' (nothing that could end the command).
bool valid_path_address(std::string_view address);

// The reverse-path for MAIL FROM: `envelope_from` unless it is empty,
// "MAILER-DAEMON" (fetch's "unknown") or not a valid_path_address(), then
// the null path (returned as "").
std::string reverse_path(std::string_view envelope_from);

// Whether `message` has an octet above 0x7F (BODY=8BITMIME, RFC 6152).
bool has_8bit(std::string_view message);

// The DATA content for `message` (LF line endings; CRLF endings are taken
// as they are): every line ending as CRLF, a leading "." doubled (RFC 5321
// §4.5.2), a final CRLF added if missing, then the terminating ".\r\n". A
// CR not followed by LF is sent as it is.
// `size` (if given) gets the message's size for SIZE=n (RFC 1870 §3: CRLF
// line ends counted, the doubled dots and the terminating ".\r\n" not).
std::string data_encode(std::string_view message, std::uint64_t* size = nullptr);

// The BDAT content for `message` (RFC 3030): the same line ends as
// data_encode() sends (every line ending as CRLF, a final CRLF added if
// missing), without dot-stuffing or terminator; its size is the chunk's
// size and SIZE='s.
std::string chunk_encode(std::string_view message);

}  // namespace apop::client::smtp
