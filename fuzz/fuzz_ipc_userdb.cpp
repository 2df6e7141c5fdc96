// The auth-userdb socket (src/ipc/userdb.hpp) on hostile bytes, both sides:
// the auth process's UserdbService on any packet a local process sends, and
// `apop deliver`'s decoder on any packet an impostor socket answers.
//
// Invariants (__builtin_trap): the service answers exactly the packets that
// decode as a user_lookup, with one well-formed user_info carrying the
// request's id, within limits::kMaxIpcMessage, and never a location for an
// account that is not found; whatever decodes (a lookup or an info) is in
// canonical form (encoding it again gives the same bytes).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "ipc/userdb.hpp"
#include "ipc/wire.hpp"

using namespace apop;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string packet(reinterpret_cast<const char*>(data), size);
  const ipc::UserdbService svc(
      [](std::string_view user) {
        if (user == "alice") {
          return ipc::UserInfo{ipc::UserStatus::found, "maildir:/m/alice", 1024u, std::nullopt};
        }
        if (user.size() % 3 == 0) return ipc::UserInfo{ipc::UserStatus::temporary, "x"};
        return ipc::UserInfo{ipc::UserStatus::unknown, "leak", 7u, 7u};
      },
      {0});
  auto lookup = ipc::decode_user_lookup(packet);
  const auto reply = svc.handle(packet);
  if (reply.has_value() != lookup.ok()) __builtin_trap();
  if (lookup) {
    std::string again;
    if (!ipc::encode_user_lookup(lookup->first, lookup->second, again) || again != packet) {
      __builtin_trap();
    }
    if (reply->size() > limits::kMaxIpcMessage) __builtin_trap();
    auto info = ipc::decode_user_info(*reply);
    if (!info || info->first != lookup->first) __builtin_trap();
    if (info->second.status != ipc::UserStatus::found &&
        (info->second.mail_location || info->second.quota_bytes || info->second.quota_messages)) {
      __builtin_trap();
    }
    if (reply->find("leak", ipc::kHeaderSize) != std::string::npos) __builtin_trap();
  }
  if (auto info = ipc::decode_user_info(packet)) {
    std::string again;
    if (!ipc::encode_user_info(info->first, info->second, again) || again != packet) {
      __builtin_trap();
    }
  }
  return 0;
}
