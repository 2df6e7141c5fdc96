// The hand-off destinations of `apop fetch`: every message is passed to a
// mail server, as fetchmail forwards to port 25 (issue 20):
//
//   lmtp:unix:PATH    LMTP (RFC 2033) on a Unix socket (Dovecot, Cyrus, Postfix)
//   lmtp:HOST:PORT    LMTP over TCP
//   smtp:HOST[:PORT]  SMTP (RFC 5321) over TCP, port 25 by default
//   (smtp:unix:PATH   SMTP on a Unix socket, for completeness)
//
// HOST may be an IPv6 literal in brackets ("[::1]:24"); a leading "~/" in
// PATH is $HOME. DestinationOptions::deliver_to is the envelope recipient
// (required); the envelope sender is MessageMeta::envelope_from, i.e. the
// message's Return-Path (smtp::reverse_path(): the null path <> when it is
// unknown or unusable).
//
// Contract (destination.hpp): store() succeeds only once the server answered
// 2xx to the end of DATA (LMTP: the recipient's reply after the final dot),
// so the caller may delete the message on the POP3 server. Otherwise:
//   4xx, connection refused/closed, timeout, protocol error -> Errc::temporary
//   5xx                                                     -> Errc::permanent
// With on_reject = bounce a 5xx instead sends a delivery status notification
// (RFC 3464, build_bounce()) through the same server, MAIL FROM:<> RCPT
// TO:<envelope sender>, and store() succeeds once that was accepted; without
// an envelope sender there is nobody to bounce to (Errc::permanent). A
// failed bounce returns the bounce's failure class.
//
// Protocol: greeting 220, LHLO/EHLO with our host name (EHLO refused with
// 5xx: HELO, no extensions); per message MAIL FROM:<sender> (" SIZE=n" when
// SIZE is offered, " BODY=8BITMIME" when the message has 8-bit octets and
// 8BITMIME is offered), RCPT TO:<deliver_to>, DATA, the message (CRLF line
// endings, dot-stuffed), ".". With PIPELINING offered MAIL, RCPT and DATA go
// out in one write and their replies are read in order (RFC 2920 §3.1).
// The connection is opened at the first store() and kept across store()
// calls: RSET after a failed transaction, QUIT in the destructor; if the
// server closed it between messages (idle timeout, 421) it is reopened once.
// After an I/O or protocol error the connection is dropped (the next store()
// reconnects). When connecting fails (refused, timeout, no 220), store()
// fails at once with the same error for limits::kSmtpReconnectBackoff, so a
// run over many messages does not wait for a dead server once per message.
// A connection lost after the message data was sent but before the final
// reply leaves the message on the POP3 server although the server may have
// delivered it: the next run sends it again (RFC 1047; fetchmail and every
// MTA relay share this).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "client/destination.hpp"
#include "client/smtp_reply.hpp"
#include "common/result.hpp"

namespace apop::client {

struct HandoffTarget {
  bool lmtp = true;          // else SMTP
  bool unix_socket = false;  // path, else host and port
  std::string path;
  std::string host;  // without brackets
  std::uint16_t port = 0;
  std::string describe() const;  // "lmtp:unix:/run/dovecot/lmtp", "smtp:[::1]:25"
};

// `kind` is "lmtp" or "smtp", `arg` what follows its colon. Errc::invalid
// with a message naming the expected form.
Result<HandoffTarget> parse_handoff_target(std::string_view kind, std::string_view arg);

// Idle LMTP/SMTP connections that hand-off destinations leave for the
// next destination to the same server, as Postfix's connection cache does:
// `apop fetch --config` polls many accounts into one LMTP server, and each
// account's connect, greeting, LHLO and QUIT are saved after the first. A
// connection is pooled only between transactions (after a 2xx, or after a
// refusal and RSET), at most limits::kHandoffPoolPerTarget per server and
// HELO name, and reused only within limits::kHandoffPoolIdle and when the
// server has not closed it (or said anything) meanwhile. Thread-safe.
class HandoffPool {
 public:
  HandoffPool();
  ~HandoffPool();  // drain()
  HandoffPool(const HandoffPool&) = delete;
  HandoffPool& operator=(const HandoffPool&) = delete;
  // QUITs and closes every idle connection (the end of a poll round).
  void drain();
  // Idle connections now (tests).
  std::size_t idle() const;

  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// open_destination()'s part for lmtp:/smtp: (no connection yet: that
// happens at the first store()). Errc::invalid without a valid deliver_to.
Result<std::unique_ptr<Destination>> open_handoff(std::string_view kind, std::string_view arg,
                                                  const DestinationOptions& options);

// The bounce for `message` refused with `reply` (RFC 3464 §2
// multipart/report; report-type=delivery-status: a text part, the
// message/delivery-status part with Reporting-MTA, Final-Recipient, Action:
// failed, Status and Diagnostic-Code, and the original header, cut at
// limits::kMaxBounceHeaders, as text/rfc822-headers). From:
// MAILER-DAEMON@reporting_host, To: the envelope sender, Auto-Submitted:
// auto-replied (RFC 3834). LF line endings, like every message we store.
struct BounceInfo {
  std::string sender;          // the original envelope sender (the bounce's recipient)
  std::string recipient;       // deliver_to
  std::string reporting_host;  // our host name
  std::string remote;          // the destination as described
  std::int64_t now = 0;        // UNIX seconds: Date
  std::string unique;          // for the boundary and Message-ID
};
std::string build_bounce(std::string_view message, const smtp::Reply& reply,
                         const BounceInfo& info);

}  // namespace apop::client
