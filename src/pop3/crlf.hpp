// The CRLF wire form of a stored message, shared by the store (to compute
// ",W=" sizes) and the core (to stream RETR/TOP). The rule, as Dovecot's:
// every LF not preceded by CR becomes CRLF; every other octet, bare CR
// included, is sent as is. A missing final newline is not counted (the
// terminating CRLF "." CRLF is not part of the message).
#pragma once

#include <cstdint>
#include <string_view>

namespace apop::pop3 {

class CrlfSizer {
 public:
  void update(std::string_view chunk) {
    for (char c : chunk) {
      if (c == '\n' && !prev_cr_) ++size_;
      prev_cr_ = (c == '\r');
      ++size_;
    }
  }
  std::uint64_t size() const { return size_; }

 private:
  std::uint64_t size_ = 0;
  bool prev_cr_ = false;
};

inline std::uint64_t crlf_size(std::string_view message) {
  CrlfSizer s;
  s.update(message);
  return s.size();
}

}  // namespace apop::pop3
