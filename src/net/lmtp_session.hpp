// The LMTP server's session (RFC 2033), I/O-free: client bytes in, reply
// bytes out, deliveries through the `LmtpDelivery` seam. The Asio driver
// (net/lmtp_server.hpp) feeds it; unit tests and fuzz_lmtp feed it strings
// and an in-memory delivery.
//
// Offered: PIPELINING (RFC 2920: every complete command in the input is
// answered in order, in one output), ENHANCEDSTATUSCODES (RFC 2034: every
// reply but the greeting and LHLO's carries one), 8BITMIME (RFC 6152: BODY=
// 7BIT or 8BITMIME accepted; bytes are stored as received), SIZE (RFC
// 1870) and CHUNKING (RFC 3030: BDAT, see below). LMTP's difference to
// SMTP: LHLO instead of HELO/EHLO (refused with 500, RFC 2033 §4.1), and
// after the final "." (or BDAT LAST's chunk) one reply per accepted
// recipient, in RCPT order (§4.2), each recipient's copy stored atomically
// on its own.
//
// BDAT: "BDAT size [LAST]" is followed by exactly `size` octets of the
// message, neither dot-stuffed nor terminated; pipelined, MAIL + RCPT +
// BDAT LAST + the message take one round trip instead of DATA's two. The
// octets are read even when the BDAT is refused (no MAIL, no recipient,
// DATA's transaction), so they are never taken for commands; a size that
// does not parse closes the session (the chunk's end cannot be found).
// Line ends are stored as DATA's are: CRLF as LF, a bare CR kept, also
// when a chunk ends between CR and LF.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/limits.hpp"
#include "common/result.hpp"

namespace apop::net {

// What RCPT learns about a recipient.
enum class LmtpRecipient {
  ok,          // an account: accepted
  unknown,     // no such account: 550 5.1.1
  temporary,   // the lookup failed now: 451 4.3.0
  over_quota,  // the message (RCPT's SIZE=) cannot fit: 552 5.2.2 or 452 4.2.2
};

// The store behind the session. Calls are made from feed(), one at a time.
class LmtpDelivery {
 public:
  virtual ~LmtpDelivery() = default;
  // Whether `user` (the local part of RCPT TO, as written) has an account,
  // and may receive a message of `size` octets (0: unknown yet; over_quota
  // when the mailbox is full or a message of that size would not fit).
  virtual LmtpRecipient recipient(std::string_view user, std::uint64_t size) = 0;
  // Stores one copy of `trace` followed by `message` for `user`,
  // atomically: all of it or nothing. `trace` is the session's trace
  // header block for this recipient (Return-Path and Received, LF line
  // ends: RFC 5321 §4.4, the final delivery's duty); `message` is the
  // client's (LF line ends, dot-unstuffed, without the terminating ".").
  // `sender` is MAIL FROM's path without brackets (empty for the null path
  // <>). Errors: Errc::temporary (451 4.3.0), Errc::over_quota (552 5.2.2
  // or 452 4.2.2), Errc::invalid (too big for the store: 552 5.3.4),
  // anything else permanent (554 5.3.0).
  virtual Result<void> deliver(std::string_view user, std::string_view sender,
                               std::string_view trace, std::string_view message) = 0;
};

struct LmtpConfig {
  // Unix time for the Received header's date (tests fix it; default: now).
  std::function<std::int64_t()> clock;
  std::string hostname = "localhost";                            // in the greeting and LHLO's reply
  std::uint64_t max_message_size = limits::kLmtpMaxMessageSize;  // SIZE
  unsigned max_recipients = limits::kLmtpMaxRecipients;
  // Over quota (at RCPT or after DATA): 452 4.2.2 (the MTA retries) instead
  // of 552 5.2.2 (bounce); the setting quota_full_tempfail.
  bool over_quota_temporary = false;
};

class LmtpSession {
 public:
  // Borrows `delivery`, which must outlive the session.
  LmtpSession(LmtpConfig config, LmtpDelivery& delivery);

  // The greeting (220), to send first.
  std::string greeting() const;
  // Takes client bytes (any split) and returns the replies they complete,
  // in order. After QUIT, too many bad commands or a protocol error the
  // session is closed(): the output ends with the last reply (221 or 421)
  // and further input is ignored.
  std::string feed(std::string_view bytes);
  bool closed() const { return closed_; }
  // Whether a message is being received (DATA's 354 sent, "." not yet seen):
  // the driver's timeout is then the data block's.
  bool in_data() const { return state_ == State::data || state_ == State::chunk; }

 private:
  enum class State { start, ready, mail, data, chunk };
  void command(std::string_view line, std::string& out);
  void bdat(std::string_view arg, std::string& out);
  void data_line(std::string_view line, bool complete, std::string& out);
  void chunk_data(std::string_view bytes);
  void end_of_chunk(std::string& out);
  void end_of_data(std::string& out);
  void append_message(std::string_view bytes);
  void bad(std::string& out, std::string_view reply);
  void reset_transaction();
  std::string trace(std::string_view address) const;

  LmtpConfig config_;
  LmtpDelivery& delivery_;
  State state_ = State::start;
  bool closed_ = false;
  bool discarding_ = false;  // in a command line longer than the limit
  bool line_start_ = true;   // in data: the next byte starts a line
  bool too_big_ = false;     // in data: the message passed max_message_size
  unsigned bad_commands_ = 0;
  std::string in_;
  std::string sender_;
  std::string client_name_;              // LHLO's name, as it goes into Received
  std::uint64_t size_ = 0;               // MAIL's SIZE= (0: not given), for the quota check at RCPT
  std::vector<std::string> recipients_;  // accounts (local parts)
  std::vector<std::string> addresses_;   // their RCPT TO paths, for Received
  std::string message_;
  // BDAT (State::chunk while its octets arrive).
  std::uint64_t chunk_left_ = 0;  // octets of the current chunk still to come
  bool chunk_last_ = false;       // the current chunk is BDAT ... LAST
  bool chunking_ = false;         // this transaction's message comes by BDAT
  bool pending_cr_ = false;       // the data so far ends in a CR (CRLF across chunks)
  std::string chunk_refusal_;     // non-empty: the BDAT was refused; its octets are dropped
  State before_chunk_ = State::start;
};

}  // namespace apop::net
