#include "net/lmtp_session.hpp"

#include <ctime>

#include <algorithm>

#include "common/parse.hpp"
#include "common/text.hpp"

namespace apop::net {

namespace {

constexpr std::string_view kCrlf = "\r\n";

void reply(std::string& out, std::string_view line) {
  out.append(line);
  out.append(kCrlf);
}

// "<path>" at the start of `s` (RFC 5321 §4.1.2, without quoted local parts
// or source routes): the path without brackets and the rest after it; nullopt
// for anything else, a path longer than kMaxLmtpPath or one with spaces or
// control characters.
std::optional<std::pair<std::string_view, std::string_view>> take_path(std::string_view s) {
  if (s.empty() || s.front() != '<') return std::nullopt;
  const auto close = s.find('>');
  if (close == std::string_view::npos || close + 1 > limits::kMaxLmtpPath) return std::nullopt;
  const std::string_view path = s.substr(1, close - 1);
  for (char c : path) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f || c == '<') return std::nullopt;
  }
  return std::pair{path, s.substr(close + 1)};
}

}  // namespace

LmtpSession::LmtpSession(LmtpConfig config, LmtpDelivery& delivery)
    : config_(std::move(config)), delivery_(delivery) {}

std::string LmtpSession::greeting() const { return "220 " + config_.hostname + " LMTP ready\r\n"; }

void LmtpSession::reset_transaction() {
  sender_.clear();
  size_ = 0;
  recipients_.clear();
  addresses_.clear();
  message_.clear();
  too_big_ = false;
  line_start_ = true;
  chunk_left_ = 0;
  chunk_last_ = false;
  chunking_ = false;
  pending_cr_ = false;
  chunk_refusal_.clear();
  if (state_ != State::start) state_ = State::ready;
}

void LmtpSession::bad(std::string& out, std::string_view line) {
  if (++bad_commands_ >= limits::kLmtpMaxBadCommands) {
    reply(out, "421 4.7.0 Too many bad commands, closing");
    closed_ = true;
    return;
  }
  reply(out, line);
}

std::string LmtpSession::feed(std::string_view bytes) {
  std::string out;
  if (closed_) return out;
  in_.append(bytes);
  std::size_t pos = 0;
  while (!closed_) {
    if (state_ == State::chunk) {
      // BDAT's octets, whatever they hold; never buffered beyond this call.
      const auto take =
          static_cast<std::size_t>(std::min<std::uint64_t>(in_.size() - pos, chunk_left_));
      chunk_data(std::string_view(in_).substr(pos, take));
      pos += take;
      chunk_left_ -= take;
      if (chunk_left_ > 0) break;
      end_of_chunk(out);
      continue;
    }
    const auto lf = in_.find('\n', pos);
    if (state_ == State::data) {
      if (lf == std::string::npos) {
        // An unterminated data line: take it in pieces, so the buffer stays
        // bounded.
        if (in_.size() - pos > limits::kLmtpDataChunk) {
          // A CR at the end may be the first half of a CRLF: it stays.
          const std::size_t end = in_.back() == '\r' ? in_.size() - 1 : in_.size();
          data_line(std::string_view(in_).substr(pos, end - pos), false, out);
          pos = end;
        }
        break;
      }
      data_line(std::string_view(in_).substr(pos, lf - pos), true, out);
      pos = lf + 1;
      continue;
    }
    if (lf == std::string::npos) {
      if (in_.size() - pos > limits::kMaxLmtpCommandLine) {
        discarding_ = true;  // answered at its end
        pos = in_.size();
      }
      break;
    }
    std::string_view line = std::string_view(in_).substr(pos, lf - pos);
    pos = lf + 1;
    if (discarding_ || line.size() + 1 > limits::kMaxLmtpCommandLine) {
      discarding_ = false;
      bad(out, "500 5.5.2 Line too long");
      continue;
    }
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    command(line, out);
  }
  if (closed_) {
    in_.clear();
  } else {
    in_.erase(0, pos);
  }
  return out;
}

void LmtpSession::command(std::string_view line, std::string& out) {
  const auto space = line.find(' ');
  const std::string_view verb = line.substr(0, space);
  const std::string_view arg =
      space == std::string_view::npos ? std::string_view{} : line.substr(space + 1);
  if (iequals(verb, "LHLO")) {
    if (trim(arg).empty()) return bad(out, "501 5.5.4 LHLO needs a host name");
    reset_transaction();
    // Its first word, as the Received header's "from": printable, no
    // comment or separator characters, bounded (a hostile name cannot add a
    // header or break this one).
    client_name_.clear();
    for (char c : trim(arg, " ").substr(0, trim(arg, " ").find(' '))) {
      const auto u = static_cast<unsigned char>(c);
      if (client_name_.size() >= limits::kMaxLmtpPath) break;
      client_name_.push_back(u > 0x20 && u < 0x7f && c != '(' && c != ')' && c != ';' ? c : '?');
    }
    state_ = State::ready;
    reply(out, "250-" + config_.hostname);
    reply(out, "250-PIPELINING");
    reply(out, "250-ENHANCEDSTATUSCODES");
    reply(out, "250-8BITMIME");
    reply(out, "250-CHUNKING");
    reply(out, "250 SIZE " + std::to_string(config_.max_message_size));
    return;
  }
  if (iequals(verb, "HELO") || iequals(verb, "EHLO")) {
    return bad(out, "500 5.5.1 This is LMTP: use LHLO (RFC 2033)");
  }
  if (iequals(verb, "QUIT")) {
    reply(out, "221 2.0.0 Bye");
    closed_ = true;
    return;
  }
  if (iequals(verb, "NOOP")) return reply(out, "250 2.0.0 OK");
  if (iequals(verb, "RSET")) {
    reset_transaction();
    return reply(out, "250 2.0.0 OK");
  }
  if (iequals(verb, "VRFY")) return reply(out, "252 2.5.0 Send the message and see");
  if (iequals(verb, "MAIL")) {
    if (state_ == State::start) return bad(out, "503 5.5.1 LHLO first");
    if (state_ != State::ready) return bad(out, "503 5.5.1 Nested MAIL command");
    if (!istarts_with(arg, "FROM:")) return bad(out, "501 5.5.4 Syntax: MAIL FROM:<address>");
    auto path = take_path(trim(arg.substr(5), " "));
    if (!path) return bad(out, "501 5.1.7 Bad sender address");
    std::string_view params = path->second;
    std::uint64_t declared_size = 0;
    while (!(params = trim(params, " ")).empty()) {
      const auto end = params.find(' ');
      const std::string_view p = params.substr(0, end);
      params = end == std::string_view::npos ? std::string_view{} : params.substr(end);
      if (istarts_with(p, "SIZE=")) {
        const auto size = parse_decimal<std::uint64_t>(p.substr(5), {.max_digits = 20});
        if (!size) return bad(out, "501 5.5.4 Bad SIZE parameter");
        if (*size > config_.max_message_size) {
          return reply(out, "552 5.3.4 Message size exceeds fixed maximum message size");
        }
        declared_size = *size;
      } else if (iequals(p, "BODY=7BIT") || iequals(p, "BODY=8BITMIME")) {
        // 8BITMIME: bytes are stored as received.
      } else {
        return bad(out, "555 5.5.4 Unsupported MAIL parameter");
      }
    }
    sender_ = std::string(path->first);
    size_ = declared_size;
    state_ = State::mail;
    return reply(out, "250 2.1.0 Sender OK");
  }
  if (iequals(verb, "RCPT")) {
    if (state_ != State::mail) return bad(out, "503 5.5.1 MAIL first");
    if (chunking_) return bad(out, "503 5.5.1 RCPT after BDAT");
    if (!istarts_with(arg, "TO:")) return bad(out, "501 5.5.4 Syntax: RCPT TO:<address>");
    auto path = take_path(trim(arg.substr(3), " "));
    if (!path || path->first.empty() || !trim(path->second, " ").empty()) {
      return bad(out, "501 5.1.3 Bad recipient address");
    }
    if (recipients_.size() >= config_.max_recipients) {
      return reply(out, "452 4.5.3 Too many recipients");
    }
    const std::string_view address = path->first;
    const auto at = address.rfind('@');
    const std::string_view user = at == std::string_view::npos ? address : address.substr(0, at);
    switch (delivery_.recipient(user, size_)) {
      case LmtpRecipient::ok:
        recipients_.emplace_back(user);
        addresses_.emplace_back(address);
        return reply(out, "250 2.1.5 Recipient OK");
      case LmtpRecipient::unknown:
        return reply(out, "550 5.1.1 No such user");
      case LmtpRecipient::temporary:
        return reply(out, "451 4.3.0 Cannot look the recipient up now, try again later");
      case LmtpRecipient::over_quota:
        return reply(out, config_.over_quota_temporary ? "452 4.2.2 Mailbox full"
                                                       : "552 5.2.2 Mailbox full");
    }
    return;
  }
  if (iequals(verb, "DATA")) {
    if (!arg.empty()) return bad(out, "501 5.5.4 DATA takes no argument");
    if (state_ != State::mail) return bad(out, "503 5.5.1 MAIL first");
    if (chunking_) return bad(out, "503 5.5.1 DATA after BDAT (RFC 3030)");
    if (recipients_.empty()) return bad(out, "503 5.5.1 No valid recipients");
    state_ = State::data;
    line_start_ = true;
    return reply(out, "354 Send the message, end with <CRLF>.<CRLF>");
  }
  if (iequals(verb, "BDAT")) return bdat(arg, out);
  if (iequals(verb, "STARTTLS") || iequals(verb, "AUTH") || iequals(verb, "EXPN") ||
      iequals(verb, "HELP") || iequals(verb, "TURN") || iequals(verb, "ETRN")) {
    return bad(out, "502 5.5.1 Command not implemented");
  }
  bad(out, "500 5.5.2 Unknown command");
}

// "BDAT size [LAST]" (RFC 3030 §2). Its octets follow whether it is
// accepted or not: a refused BDAT drops them and answers once they are read.
void LmtpSession::bdat(std::string_view arg, std::string& out) {
  const auto space = arg.find(' ');
  const std::string_view size_text = arg.substr(0, space);
  const std::string_view marker =
      space == std::string_view::npos ? std::string_view{} : trim(arg.substr(space + 1), " ");
  const auto size = parse_decimal<std::uint64_t>(size_text, {.max_digits = 20});
  if (!size) {
    // The octets that follow cannot be told from commands: nothing more is read.
    reply(out, "421 4.5.4 Bad BDAT chunk size, closing");
    closed_ = true;
    return;
  }
  const bool last = iequals(marker, "LAST");
  if (!marker.empty() && !last) {
    chunk_refusal_ = "501 5.5.4 Syntax: BDAT size [LAST]";
  } else if (state_ == State::start) {
    chunk_refusal_ = "503 5.5.1 LHLO first";
  } else if (state_ != State::mail) {
    chunk_refusal_ = "503 5.5.1 MAIL first";
  } else if (recipients_.empty()) {
    chunk_refusal_ = "503 5.5.1 No valid recipients";
  }
  chunking_ = true;
  chunk_last_ = last;
  chunk_left_ = *size;
  before_chunk_ = state_;
  state_ = State::chunk;
  if (*size == 0) end_of_chunk(out);
}

// Appends message octets, checking the size limit (a message too big is
// dropped, its remaining octets read and ignored: 552 at the end).
void LmtpSession::append_message(std::string_view bytes) {
  if (too_big_) return;
  if (bytes.size() > config_.max_message_size - message_.size()) {
    too_big_ = true;
    message_.clear();
    message_.shrink_to_fit();
    return;
  }
  message_.append(bytes);
}

// A piece of a chunk: CRLF stored as LF, as DATA's lines are.
void LmtpSession::chunk_data(std::string_view d) {
  if (!chunk_refusal_.empty() || d.empty()) return;
  if (pending_cr_) {
    pending_cr_ = false;
    if (d.front() == '\n') {
      append_message("\n");
      d.remove_prefix(1);
    } else {
      append_message("\r");
    }
  }
  while (!d.empty()) {
    const auto cr = d.find('\r');
    if (cr == std::string_view::npos) return append_message(d);
    append_message(d.substr(0, cr));
    if (cr + 1 == d.size()) {
      pending_cr_ = true;  // its LF may start the next piece
      return;
    }
    if (d[cr + 1] == '\n') {
      append_message("\n");
      d.remove_prefix(cr + 2);
    } else {
      append_message("\r");
      d.remove_prefix(cr + 1);
    }
  }
}

// A chunk's octets are all read: its reply, or for LAST the message's
// (one per recipient, as after DATA).
void LmtpSession::end_of_chunk(std::string& out) {
  if (!chunk_refusal_.empty()) {
    const std::string refusal = std::move(chunk_refusal_);
    state_ = before_chunk_;  // a BDAT before LHLO leaves the session unhelloed
    reset_transaction();
    return bad(out, refusal);
  }
  if (!chunk_last_) {
    state_ = State::mail;
    return reply(out, "250 2.0.0 Chunk received");
  }
  if (pending_cr_) {
    pending_cr_ = false;
    append_message("\r");
  }
  end_of_data(out);
}

// One line of the message (`complete`: it ended with LF, which is not in
// `line`; else a piece of a longer line, more to follow). CRLF and a bare
// LF both end a line; the message is stored with LF line ends (as in a
// Maildir file), a CR elsewhere is kept. A leading '.' is removed (RFC 5321
// §4.5.2); "." alone ends the message.
void LmtpSession::data_line(std::string_view line, bool complete, std::string& out) {
  if (complete && !line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line_start_ && complete && line == ".") return end_of_data(out);
  if (line_start_ && !line.empty() && line.front() == '.') line.remove_prefix(1);
  line_start_ = complete;
  if (too_big_) return;
  const std::uint64_t room = config_.max_message_size - message_.size();
  if (line.size() + (complete ? 1 : 0) > room) {
    too_big_ = true;
    message_.clear();
    message_.shrink_to_fit();
    return;
  }
  message_.append(line);
  if (complete) message_.push_back('\n');
}

// The trace block a final delivery puts at the top of the message (RFC
// 5321 §4.4): Return-Path with MAIL FROM's path, and Received naming the
// LMTP client, this server and the recipient (§4.4's "for" clause: one
// recipient per copy, so no other recipient is disclosed). The paths were
// checked at MAIL and RCPT (printable, no space).
std::string LmtpSession::trace(std::string_view address) const {
  const std::int64_t now =
      config_.clock ? config_.clock() : static_cast<std::int64_t>(std::time(nullptr));
  // The paths are printable but may hold 8-bit bytes (no SMTPUTF8 is
  // offered, so a header keeps to ASCII: those become '?').
  auto ascii = [](std::string& out, std::string_view path) {
    for (char c : path) out.push_back(static_cast<unsigned char>(c) < 0x7f ? c : '?');
  };
  std::string t = "Return-Path: <";
  ascii(t, sender_);
  t += ">\nReceived: from " + client_name_ + "\n\tby " + config_.hostname + " with LMTP\n\tfor <";
  ascii(t, address);
  t += ">; " + rfc5322_date(now) + "\n";
  return t;
}

void LmtpSession::end_of_data(std::string& out) {
  for (std::size_t i = 0; i < recipients_.size(); ++i) {
    const std::string& user = recipients_[i];
    if (too_big_) {
      reply(out, "552 5.3.4 Message too big");
      continue;
    }
    if (auto r = delivery_.deliver(user, sender_, trace(addresses_[i]), message_); r) {
      reply(out, "250 2.0.0 Delivered to " + user);
    } else if (r.error().code == Errc::temporary || r.error().code == Errc::in_use) {
      reply(out, "451 4.3.0 Cannot store the message now, try again later");
    } else if (r.error().code == Errc::over_quota) {
      // The real check, under the mailbox's quota lock (store/quota.hpp).
      reply(out,
            config_.over_quota_temporary ? "452 4.2.2 Mailbox full" : "552 5.2.2 Mailbox full");
    } else if (r.error().code == Errc::invalid) {
      reply(out, "552 5.3.4 Message too big for the mailbox");
    } else {
      reply(out, "554 5.3.0 Cannot store the message");
    }
  }
  state_ = State::ready;
  reset_transaction();
}

}  // namespace apop::net
