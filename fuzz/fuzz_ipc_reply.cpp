// The worker's side of the IPC (src/ipc/wire.hpp): the reply decoder on
// anything the auth process (or whatever holds the other end) might send.
//
// Invariants (__builtin_trap): a reply that decodes is within
// limits::kMaxIpcMessage, in canonical form (encoding it again gives the
// same bytes), its enums are in range and its fields within their bounds;
// the request decoder never takes a reply (the two type ranges differ).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include "ipc/wire.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace apop;
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  auto d = ipc::decode_reply(in);
  if (!d) return 0;
  if (in.size() > limits::kMaxIpcMessage) __builtin_trap();
  if (ipc::decode_request(in)) __builtin_trap();
  std::string again;
  if (!ipc::encode_reply(d->id, d->body, again) || again != in) __builtin_trap();
  auto check_result = [](const pop3::AuthResult& r) {
    if (r.failure > pop3::AuthFailure::temporary) __builtin_trap();
    if (r.credential.size() > ipc::kMaxCredential) __builtin_trap();
    if (r.mail_location && r.mail_location->size() > ipc::kMaxMailLocation) __builtin_trap();
  };
  if (const auto* r = std::get_if<pop3::AuthResult>(&d->body)) check_result(*r);
  if (const auto* s = std::get_if<pop3::SaslReply>(&d->body)) {
    if (s->kind > pop3::SaslReply::Kind::malformed) __builtin_trap();
    if (s->text.size() > ipc::kMaxChallenge || s->user.size() > ipc::kMaxUser) __builtin_trap();
    check_result(s->result);
  }
  if (const auto* l = std::get_if<ipc::LockStatus>(&d->body)) {
    if (l->outcome < ipc::LockOutcome::locked || l->outcome > ipc::LockOutcome::temporary) {
      __builtin_trap();
    }
  }
  if (const auto* m = std::get_if<ipc::MechanismList>(&d->body)) {
    if (m->mechanisms.size() > ipc::kMaxMechanisms) __builtin_trap();
    for (const auto& mech : m->mechanisms) {
      if (mech.name.empty() || mech.name.size() > ipc::kMaxMechanism) __builtin_trap();
    }
  }
  return 0;
}
