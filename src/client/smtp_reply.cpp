#include "client/smtp_reply.hpp"

#include "common/limits.hpp"
#include "common/text.hpp"

namespace apop::client::smtp {

namespace {

bool digit(char c) { return c >= '0' && c <= '9'; }

Error bad(const std::string& why, std::string_view line) {
  return make_error(Errc::invalid, "malformed reply (" + why + "): " + printable(line));
}

}  // namespace

std::string Reply::shown(std::size_t max) const {
  std::string text = std::to_string(code);
  for (std::size_t i = 0; i < lines.size(); ++i) {
    text += i == 0 ? " " : " / ";
    text += lines[i];
    if (text.size() > max) break;
  }
  return printable(text, {.max = max, .hex_escape = false});
}

void ReplyParser::reset() {
  reply_ = Reply{};
  done_ = false;
}

Result<bool> ReplyParser::feed(std::string_view line) {
  if (done_) reset();
  if (line.size() > limits::kMaxSmtpReplyLine) {
    return make_error(Errc::invalid, "reply line longer than " +
                                         std::to_string(limits::kMaxSmtpReplyLine) + " octets");
  }
  if (reply_.lines.size() >= limits::kMaxSmtpReplyLines) {
    return make_error(Errc::invalid, "reply of more than " +
                                         std::to_string(limits::kMaxSmtpReplyLines) + " lines");
  }
  // Reply-line = *( Reply-code "-" [ textstring ] CRLF )
  //              Reply-code [ SP textstring ] CRLF     (RFC 5321 §4.2)
  if (line.size() < 3 || !digit(line[0]) || !digit(line[1]) || !digit(line[2])) {
    return bad("no reply code", line);
  }
  if (line[0] < '2' || line[0] > '5' || line[1] > '5') return bad("reply code out of range", line);
  const int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
  bool last = true;
  if (line.size() > 3) {
    if (line[3] == '-') {
      last = false;
    } else if (line[3] != ' ') {
      return bad("no space or '-' after the code", line);
    }
  }
  if (!reply_.lines.empty() && code != reply_.code) return bad("code changed within a reply", line);
  reply_.code = code;
  reply_.lines.emplace_back(line.size() > 4 ? line.substr(4) : std::string_view());
  if (reply_.lines.size() == 1) {
    std::string enh = enhanced_code(reply_.lines[0]);
    if (!enh.empty() && enh[0] == line[0]) reply_.enhanced = std::move(enh);
  }
  done_ = last;
  return last;
}

Result<Reply> parse_reply(std::string_view wire, std::size_t* consumed) {
  ReplyParser p;
  std::size_t pos = 0;
  while (pos < wire.size()) {
    const std::size_t nl = wire.find('\n', pos);
    if (nl == std::string_view::npos) break;
    std::string_view line = wire.substr(pos, nl - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    pos = nl + 1;
    auto r = p.feed(line);
    if (!r) return r.error();
    if (*r) {
      if (consumed != nullptr) *consumed = pos;
      return p.reply();
    }
  }
  return make_error(Errc::invalid, "incomplete reply");
}

std::string enhanced_code(std::string_view text) {
  // class "." subject "." detail   (RFC 3463 §2)
  if (text.size() < 5) return {};
  if (text[0] != '2' && text[0] != '4' && text[0] != '5') return {};
  if (text[1] != '.') return {};
  std::size_t pos = 2;
  for (int part = 0; part < 2; ++part) {
    const std::size_t start = pos;
    while (pos < text.size() && digit(text[pos]) && pos - start < 4) ++pos;
    const std::size_t n = pos - start;
    if (n == 0 || n > 3) return {};
    if (part == 0) {
      if (pos >= text.size() || text[pos] != '.') return {};
      ++pos;
    }
  }
  if (pos < text.size() && text[pos] != ' ') return {};
  return std::string(text.substr(0, pos));
}

Extensions parse_extensions(const Reply& ehlo) {
  Extensions x;
  for (std::size_t i = 1; i < ehlo.lines.size(); ++i) {
    std::string_view l = ehlo.lines[i];
    const std::size_t sp = l.find(' ');
    const std::string kw = ascii_uppercase(l.substr(0, sp));
    const std::string_view param =
        sp == std::string_view::npos ? std::string_view() : l.substr(sp + 1);
    if (kw.empty()) continue;
    x.keywords.push_back(printable(kw, {.max = 64, .hex_escape = false}));
    if (kw == "PIPELINING") x.pipelining = true;
    if (kw == "8BITMIME") x.eightbitmime = true;
    if (kw == "CHUNKING") x.chunking = true;
    if (kw == "ENHANCEDSTATUSCODES") x.enhanced_codes = true;
    if (kw == "SIZE") {
      x.size = true;
      std::uint64_t v = 0;
      bool ok = !param.empty() && param.size() <= 18;
      for (char c : param) ok = ok && digit(c);
      if (ok) {
        for (char c : param) v = v * 10 + static_cast<std::uint64_t>(c - '0');
        x.size_max = v;
      }
    }
  }
  return x;
}

bool valid_path_address(std::string_view address) {
  if (address.empty() || address.size() > limits::kMaxSmtpPath - 2) return false;
  for (char c : address) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f || c == '<' || c == '>') return false;
  }
  return true;
}

std::string reverse_path(std::string_view envelope_from) {
  if (envelope_from == "MAILER-DAEMON" || !valid_path_address(envelope_from)) return {};
  return std::string(envelope_from);
}

bool has_8bit(std::string_view message) {
  for (char c : message) {
    if (static_cast<unsigned char>(c) > 0x7f) return true;
  }
  return false;
}

namespace {

// CRLF line ends (a final one added), and with `stuff` a leading "." doubled;
// `stuffed` gets the number of doubled dots.
std::string encode_lines(std::string_view message, bool stuff, std::uint64_t& stuffed) {
  stuffed = 0;
  std::string out;
  out.reserve(message.size() + message.size() / 32 + 8);
  std::size_t pos = 0;
  while (pos < message.size()) {
    std::size_t nl = message.find('\n', pos);
    const bool last = nl == std::string_view::npos;
    std::string_view line = message.substr(pos, last ? std::string_view::npos : nl - pos);
    if (!last && !line.empty() && line.back() == '\r') line.remove_suffix(1);  // a CRLF ending
    if (stuff && !line.empty() && line[0] == '.') {
      out += '.';
      ++stuffed;
    }
    out += line;
    out += "\r\n";
    pos = last ? message.size() : nl + 1;
  }
  return out;
}

}  // namespace

std::string data_encode(std::string_view message, std::uint64_t* size) {
  std::uint64_t stuffed = 0;
  std::string out = encode_lines(message, true, stuffed);
  if (size != nullptr) *size = out.size() - stuffed;
  out += ".\r\n";
  return out;
}

std::string chunk_encode(std::string_view message) {
  std::uint64_t stuffed = 0;
  return encode_lines(message, false, stuffed);
}

}  // namespace apop::client::smtp
