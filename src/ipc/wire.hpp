// The messages between a network worker and the auth process (issue 19),
// I/O-free. One message is one SOCK_SEQPACKET packet (the kernel keeps the
// boundaries, so there is no length prefix to trust), at most
// limits::kMaxIpcMessage bytes:
//
//   header   u8 version (kProtocolVersion) | u8 type | u16 flags (0) | u32 request id
//   body     the fields of the type, in order, nothing after them
//
// Integers are big-endian; a bool is one byte 0 or 1; a string is a u16
// length and that many bytes, each field with its own bound (below); an
// optional is one byte 0 (absent) or 1 followed by the value. A reply
// carries the id of its request; record_login gets none on the channel (the
// worker does not wait for it; AuthService::Handled::send).
//
// Requests (worker -> auth): hello, verify_apop, verify_plain, sasl_start,
// sasl_step, sasl_end, record_login, mechanisms, lock_maildrop,
// unlock_maildrop. Replies (auth -> worker): ack, auth_result, sasl_reply,
// mechanism_list, error, lock_status. No message carries a secret from the
// auth process: a reply is a verdict (pop3::AuthResult), a SASL challenge, a
// list of mechanism names, or whether a maildrop lock was taken.
//
// Decoders return a value or an error, never trust a length, and refuse an
// unknown version, type or enum value, a flag, a field over its bound and
// trailing bytes. Request decoders return views into the packet (nothing
// copied: a password stays in the one buffer the caller wipes).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/limits.hpp"
#include "common/result.hpp"
#include "common/wipe.hpp"
#include "pop3/interfaces.hpp"

namespace apop::ipc {

// 2: user_info carries the account's quota limits (issue 21). Every message
// carries the version, so a `apop deliver` and a server of different
// versions refuse each other's packets: the delivery fails temporarily
// (EX_TEMPFAIL) and the MTA retries, it never runs with half the account.
inline constexpr std::uint8_t kProtocolVersion = 2;
inline constexpr std::size_t kHeaderSize = 8;

// Field bounds. Strings that come from a client's command line (user,
// password, digest, SASL responses) are bounded by that line.
inline constexpr std::size_t kMaxUser = limits::kMaxCommandLine;
inline constexpr std::size_t kMaxProof =
    limits::kMaxCommandLine;  // password, digest, SASL response
inline constexpr std::size_t kMaxTimestamp = limits::kMaxTimestamp;
inline constexpr std::size_t kMaxAddress = limits::kMaxIpcAddress;
// RFC 4422 §3.1: a mechanism name is 1 to 20 characters [A-Z0-9-_].
inline constexpr std::size_t kMaxMechanism = 20;
// RFC 2449 §4: a challenge goes out as "+ " text CRLF, one response line.
inline constexpr std::size_t kMaxChallenge = limits::kMaxResponseLine - 4;
inline constexpr std::size_t kMaxCredential = limits::kMaxCommandLine;  // "device:NAME"
inline constexpr std::size_t kMaxMailLocation = limits::kMaxIpcMailLocation;
inline constexpr std::size_t kMaxMechanisms = limits::kMaxCapaSaslMechanisms;

enum class MsgType : std::uint8_t {
  // requests
  hello = 1,
  verify_apop = 2,
  verify_plain = 3,
  sasl_start = 4,
  sasl_step = 5,
  sasl_end = 6,
  record_login = 7,
  mechanisms = 8,
  lock_maildrop = 9,
  unlock_maildrop = 10,
  // replies
  ack = 0x81,
  auth_result = 0x82,
  sasl_reply = 0x83,
  mechanism_list = 0x84,
  error = 0x85,
  lock_status = 0x86,
  // the auth-userdb socket (below)
  user_lookup = 0x40,
  user_info = 0xC0,
};

// Why the auth process did not answer a request with a result.
enum class ErrorCode : std::uint8_t {
  malformed = 1,     // the request was not a valid message: the channel is closed after this
  refused = 2,       // valid but not allowed now (unknown or busy exchange, too many
                     // exchanges, record_login without a login, a result too large to send)
  rate_limited = 3,  // the worker is over its request rate or its failed-check rate
};

// The answer to lock_maildrop (pop3::MaildropLocks::try_lock's three outcomes).
enum class LockOutcome : std::uint8_t {
  locked = 1,     // taken for this worker: give it back with unlock_maildrop
  in_use = 2,     // another server holds it: [IN-USE]
  temporary = 3,  // the database cannot tell: [SYS/TEMP]
};

// --- requests (views into the packet or into the caller's strings) ----------
struct Hello {
  std::uint32_t version = kProtocolVersion;
  std::uint32_t worker_id = 0;
};
struct VerifyApop {
  std::string_view user, timestamp, digest;
  bool tls = false;
  std::string_view address;
};
struct VerifyPlain {
  std::string_view user, password;
  bool tls = false;
  std::string_view address;
};
// Starts exchange `exchange` (chosen by the worker, unique among its open
// exchanges) and runs its first step with the initial response.
struct SaslStart {
  std::uint32_t exchange = 0;
  std::string_view mechanism;
  std::optional<std::string_view> initial;
  bool tls = false;
  std::string_view address;
};
struct SaslStep {
  std::uint32_t exchange = 0;
  std::optional<std::string_view> response;
};
struct SaslEnd {
  std::uint32_t exchange = 0;
};
struct RecordLogin {
  std::string_view user;
  std::int64_t when = 0;
};
struct Mechanisms {};
// The shared (cluster-wide) maildrop lock of `user`, which the auth process
// takes and holds for the worker (pg::MaildropLocks), and gives back.
struct LockMaildrop {
  std::string_view user;
};
struct UnlockMaildrop {
  std::string_view user;
};

using Request = std::variant<Hello, VerifyApop, VerifyPlain, SaslStart, SaslStep, SaslEnd,
                             RecordLogin, Mechanisms, LockMaildrop, UnlockMaildrop>;

struct DecodedRequest {
  std::uint32_t id = 0;
  Request body;
};

// --- replies (owning) ----------------------------------------------------------
struct Ack {};
struct MechanismList {
  std::vector<pop3::SaslMechanism> mechanisms;
};
struct ErrorReply {
  ErrorCode code = ErrorCode::malformed;
};
struct LockStatus {
  LockOutcome outcome = LockOutcome::temporary;
};

using Reply =
    std::variant<Ack, pop3::AuthResult, pop3::SaslReply, MechanismList, ErrorReply, LockStatus>;

struct DecodedReply {
  std::uint32_t id = 0;
  Reply body;
};

// Appends the message to `out` (cleared first). Errc::invalid when a field is
// over its bound (nothing useful is left in `out`). Reserve
// limits::kMaxIpcMessage in `out` first to keep a password in one buffer.
Result<void> encode_request(std::uint32_t id, const Request& request, std::string& out);
Result<void> encode_reply(std::uint32_t id, const Reply& reply, std::string& out);

// Errc::invalid for anything but one well-formed message of the current
// version. The views of a DecodedRequest point into `packet`.
Result<DecodedRequest> decode_request(std::string_view packet);
Result<DecodedReply> decode_reply(std::string_view packet);

// The request id of a packet whose header is well formed (for the error
// reply to a request whose body is not); nullopt otherwise.
std::optional<std::uint32_t> peek_request_id(std::string_view packet);

MsgType request_type(const Request& request);
MsgType reply_type(const Reply& reply);

// --- the auth-userdb socket ----------------------------------------------------
// With `auth_user` the account database belongs to the auth process's user
// alone, so `apop deliver` (run by the MTA as the service user) asks the auth
// process whether an account exists and where its mail goes, over a Unix
// socket (ipc/userdb.hpp): one user_lookup, one user_info, same header. No
// secret crosses: existence, the account's own mail location and its own
// quota limits only.
struct UserLookup {
  std::string_view user;
};
enum class UserStatus : std::uint8_t { unknown = 0, found = 1, temporary = 2 };
struct UserInfo {
  UserStatus status = UserStatus::unknown;
  // The account's own mail location (found only; absent: the default).
  std::optional<std::string> mail_location;
  // The account's own quota limits (found only; absent: the server's
  // default, 0: unlimited), auth::AccountQuota. Each an optional u64.
  std::optional<std::uint64_t> quota_bytes = std::nullopt;
  std::optional<std::uint64_t> quota_messages = std::nullopt;
};
Result<void> encode_user_lookup(std::uint32_t id, const UserLookup& m, std::string& out);
Result<void> encode_user_info(std::uint32_t id, const UserInfo& m, std::string& out);
// Errc::invalid for anything but one well-formed message of that type; the
// lookup's view points into `packet`.
Result<std::pair<std::uint32_t, UserLookup>> decode_user_lookup(std::string_view packet);
Result<std::pair<std::uint32_t, UserInfo>> decode_user_info(std::string_view packet);

// Buffers that held a password, a digest or a SASL response are wiped with
// apop::wipe (common/wipe.hpp).
using apop::wipe;

}  // namespace apop::ipc
