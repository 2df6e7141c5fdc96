// Drives a whole POP3 session over the in-memory store: the fuzz input is the
// client's byte stream, split into feeds at '\x01' so partial lines and
// pipelining are exercised. The first feeds log in with a valid APOP digest
// when the input starts with 'L', so the TRANSACTION state is reached too.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "auth/authenticator.hpp"
#include "auth/credential_store.hpp"
#include "auth/digest.hpp"
#include "pop3/session.hpp"
#include "store/memory.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::string kTs = "<1.2@fuzz>";
  static apop::auth::MemoryCredentialStore creds;
  static const bool added = creds.add("u", "fuzzing-secret-1").ok();
  if (!added) __builtin_trap();
  static apop::auth::StoreAuthenticator auth(creds);
  apop::store::MemoryStore mail;
  mail.add_message("u", "Subject: a\n\n.line\nbody\r\n");
  mail.add_message("u", "");
  mail.add_message("u", "no newline at end");
  apop::pop3::SessionConfig cfg;
  cfg.secure = size > 0 && (data[0] & 2);
  apop::pop3::Session s(cfg, auth, mail, kTs);
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::string out;
  if (!in.empty() && in[0] == 'L') {
    s.feed("APOP u " + apop::auth::md5_hex(kTs + "fuzzing-secret-1") + "\r\n");
    in.remove_prefix(1);
  }
  for (;;) {
    std::size_t cut = in.find('\x01');
    s.feed(in.substr(0, cut));
    for (;;) {
      out.clear();
      apop::pop3::Next n = s.next(out);
      if (out.size() > 4 * 65536) __builtin_trap();  // bounded output per step
      if (n != apop::pop3::Next::output) break;
    }
    if (cut == std::string_view::npos || s.state() == apop::pop3::State::closed) break;
    in.remove_prefix(cut + 1);
  }
  return 0;
}
