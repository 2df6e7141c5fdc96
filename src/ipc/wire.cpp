#include "ipc/wire.hpp"

#include <string.h>  // explicit_bzero (glibc)

#include <type_traits>

namespace apop::ipc {

namespace {

Error invalid(std::string message) { return make_error(Errc::invalid, std::move(message)); }

// Appends fields; remembers the first field over its bound.
class Writer {
 public:
  explicit Writer(std::string& out) : out_(out) {}
  void u8(std::uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void u16(std::uint16_t v) {
    u8(static_cast<std::uint8_t>(v >> 8));
    u8(static_cast<std::uint8_t>(v));
  }
  void u32(std::uint32_t v) {
    u16(static_cast<std::uint16_t>(v >> 16));
    u16(static_cast<std::uint16_t>(v));
  }
  void u64(std::uint64_t v) {
    u32(static_cast<std::uint32_t>(v >> 32));
    u32(static_cast<std::uint32_t>(v));
  }
  void i64(std::int64_t v) { u64(static_cast<std::uint64_t>(v)); }
  void boolean(bool v) { u8(v ? 1 : 0); }
  void str(std::string_view s, std::size_t max, const char* what) {
    if (s.size() > max) return mark_bad(what);
    u16(static_cast<std::uint16_t>(s.size()));
    out_.append(s);
  }
  void opt_str(const std::optional<std::string_view>& s, std::size_t max, const char* what) {
    boolean(s.has_value());
    if (s) str(*s, max, what);
  }
  template <typename T, typename F>
  void opt(const std::optional<T>& v, F&& put) {
    boolean(v.has_value());
    if (v) put(*v);
  }
  void mark_bad(const char* what) {
    if (bad_ == nullptr) bad_ = what;
  }
  Result<void> finish() {
    if (bad_ != nullptr) return invalid(std::string(bad_) + " too long");
    if (out_.size() > limits::kMaxIpcMessage) return invalid("message too long");
    return {};
  }

 private:
  std::string& out_;
  const char* bad_ = nullptr;
};

// Reads fields; any short read or bad value makes it fail for good.
class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  bool ok() const { return ok_; }
  bool at_end() const { return ok_ && in_.empty(); }
  void fail() { ok_ = false; }
  std::uint8_t u8() {
    if (!ok_ || in_.empty()) return fail(), 0;
    const auto v = static_cast<std::uint8_t>(in_.front());
    in_.remove_prefix(1);
    return v;
  }
  std::uint16_t u16() {
    const std::uint16_t hi = u8();
    return static_cast<std::uint16_t>(hi << 8 | u8());
  }
  std::uint32_t u32() {
    const std::uint32_t hi = u16();
    return hi << 16 | u16();
  }
  std::uint64_t u64() {
    const std::uint64_t hi = u32();
    return hi << 32 | u32();
  }
  std::int64_t i64() { return static_cast<std::int64_t>(u64()); }
  bool boolean() {
    const std::uint8_t v = u8();
    if (v > 1) fail();
    return v == 1;
  }
  std::string_view str(std::size_t max) {
    const std::size_t n = u16();
    if (!ok_ || n > max || n > in_.size()) return fail(), std::string_view();
    const std::string_view s = in_.substr(0, n);
    in_.remove_prefix(n);
    return s;
  }
  std::optional<std::string_view> opt_str(std::size_t max) {
    if (!boolean()) return std::nullopt;
    return str(max);
  }
  // RFC 4422 §3.1: 1 to 20 characters of [A-Z0-9-_].
  std::string_view mechanism() {
    const std::string_view s = str(kMaxMechanism);
    if (s.empty()) fail();
    for (char c : s) {
      if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_')) fail();
    }
    return s;
  }

 private:
  std::string_view in_;
  bool ok_ = true;
};

void header(Writer& w, MsgType type, std::uint32_t id) {
  w.u8(kProtocolVersion);
  w.u8(static_cast<std::uint8_t>(type));
  w.u16(0);
  w.u32(id);
}

// The header of `packet`: its type and id, or nullopt (short, another
// version, flags set).
struct Header {
  MsgType type;
  std::uint32_t id;
};
std::optional<Header> read_header(Reader& r, std::size_t packet_size) {
  if (packet_size > limits::kMaxIpcMessage) return std::nullopt;
  const std::uint8_t version = r.u8();
  const std::uint8_t type = r.u8();
  const std::uint16_t flags = r.u16();
  const std::uint32_t id = r.u32();
  if (!r.ok() || version != kProtocolVersion || flags != 0) return std::nullopt;
  return Header{static_cast<MsgType>(type), id};
}

constexpr std::uint8_t kLastFailure = static_cast<std::uint8_t>(pop3::AuthFailure::temporary);
constexpr std::uint8_t kLastSaslKind = static_cast<std::uint8_t>(pop3::SaslReply::Kind::malformed);

void put_result(Writer& w, const pop3::AuthResult& a) {
  w.boolean(a.ok);
  w.str(a.credential, kMaxCredential, "credential");
  w.u8(static_cast<std::uint8_t>(a.failure));
  const auto ms = a.delay.count();
  w.u32(ms <= 0 ? 0 : ms >= 0xFFFFFFFF ? 0xFFFFFFFFu : static_cast<std::uint32_t>(ms));
  w.opt(a.limits.login_delay, [&](std::uint32_t v) { w.u32(v); });
  w.opt(a.limits.expire_days, [&](std::int64_t v) { w.i64(v); });
  w.opt(a.limits.last_login, [&](std::int64_t v) { w.i64(v); });
  w.boolean(a.mail_location.has_value());
  if (a.mail_location) w.str(*a.mail_location, kMaxMailLocation, "mail location");
}

pop3::AuthResult get_result(Reader& r) {
  pop3::AuthResult a;
  a.ok = r.boolean();
  a.credential = std::string(r.str(kMaxCredential));
  const std::uint8_t failure = r.u8();
  if (failure > kLastFailure) r.fail();
  a.failure = static_cast<pop3::AuthFailure>(failure);
  a.delay = std::chrono::milliseconds(r.u32());
  if (r.boolean()) a.limits.login_delay = r.u32();
  if (r.boolean()) a.limits.expire_days = r.i64();
  if (r.boolean()) a.limits.last_login = r.i64();
  if (r.boolean()) a.mail_location = std::string(r.str(kMaxMailLocation));
  return a;
}

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

}  // namespace

MsgType request_type(const Request& request) {
  return std::visit(Overloaded{
                        [](const Hello&) { return MsgType::hello; },
                        [](const VerifyApop&) { return MsgType::verify_apop; },
                        [](const VerifyPlain&) { return MsgType::verify_plain; },
                        [](const SaslStart&) { return MsgType::sasl_start; },
                        [](const SaslStep&) { return MsgType::sasl_step; },
                        [](const SaslEnd&) { return MsgType::sasl_end; },
                        [](const RecordLogin&) { return MsgType::record_login; },
                        [](const Mechanisms&) { return MsgType::mechanisms; },
                        [](const LockMaildrop&) { return MsgType::lock_maildrop; },
                        [](const UnlockMaildrop&) { return MsgType::unlock_maildrop; },
                    },
                    request);
}

MsgType reply_type(const Reply& reply) {
  return std::visit(Overloaded{
                        [](const Ack&) { return MsgType::ack; },
                        [](const pop3::AuthResult&) { return MsgType::auth_result; },
                        [](const pop3::SaslReply&) { return MsgType::sasl_reply; },
                        [](const MechanismList&) { return MsgType::mechanism_list; },
                        [](const ErrorReply&) { return MsgType::error; },
                        [](const LockStatus&) { return MsgType::lock_status; },
                    },
                    reply);
}

Result<void> encode_request(std::uint32_t id, const Request& request, std::string& out) {
  out.clear();
  Writer w(out);
  header(w, request_type(request), id);
  std::visit(Overloaded{
                 [&](const Hello& m) {
                   w.u32(m.version);
                   w.u32(m.worker_id);
                 },
                 [&](const VerifyApop& m) {
                   w.str(m.user, kMaxUser, "user");
                   w.str(m.timestamp, kMaxTimestamp, "timestamp");
                   w.str(m.digest, kMaxProof, "digest");
                   w.boolean(m.tls);
                   w.str(m.address, kMaxAddress, "address");
                 },
                 [&](const VerifyPlain& m) {
                   w.str(m.user, kMaxUser, "user");
                   w.str(m.password, kMaxProof, "password");
                   w.boolean(m.tls);
                   w.str(m.address, kMaxAddress, "address");
                 },
                 [&](const SaslStart& m) {
                   w.u32(m.exchange);
                   w.str(m.mechanism, kMaxMechanism, "mechanism");
                   w.opt_str(m.initial, kMaxProof, "initial response");
                   w.boolean(m.tls);
                   w.str(m.address, kMaxAddress, "address");
                 },
                 [&](const SaslStep& m) {
                   w.u32(m.exchange);
                   w.opt_str(m.response, kMaxProof, "response");
                 },
                 [&](const SaslEnd& m) { w.u32(m.exchange); },
                 [&](const RecordLogin& m) {
                   w.str(m.user, kMaxUser, "user");
                   w.i64(m.when);
                 },
                 [&](const Mechanisms&) {},
                 [&](const LockMaildrop& m) { w.str(m.user, kMaxUser, "user"); },
                 [&](const UnlockMaildrop& m) { w.str(m.user, kMaxUser, "user"); },
             },
             request);
  return w.finish();
}

Result<void> encode_reply(std::uint32_t id, const Reply& reply, std::string& out) {
  out.clear();
  Writer w(out);
  header(w, reply_type(reply), id);
  std::visit(Overloaded{
                 [&](const Ack&) {},
                 [&](const pop3::AuthResult& m) { put_result(w, m); },
                 [&](const pop3::SaslReply& m) {
                   w.u8(static_cast<std::uint8_t>(m.kind));
                   w.str(m.text, kMaxChallenge, "challenge");
                   w.str(m.user, kMaxUser, "user");
                   put_result(w, m.result);
                 },
                 [&](const MechanismList& m) {
                   if (m.mechanisms.size() > kMaxMechanisms) return w.mark_bad("mechanism list");
                   w.u8(static_cast<std::uint8_t>(m.mechanisms.size()));
                   for (const auto& mech : m.mechanisms) {
                     w.str(mech.name, kMaxMechanism, "mechanism");
                     w.boolean(mech.plaintext);
                   }
                 },
                 [&](const ErrorReply& m) { w.u8(static_cast<std::uint8_t>(m.code)); },
                 [&](const LockStatus& m) { w.u8(static_cast<std::uint8_t>(m.outcome)); },
             },
             reply);
  return w.finish();
}

std::optional<std::uint32_t> peek_request_id(std::string_view packet) {
  Reader r(packet);
  auto h = read_header(r, packet.size());
  if (!h) return std::nullopt;
  return h->id;
}

Result<DecodedRequest> decode_request(std::string_view packet) {
  Reader r(packet);
  const auto h = read_header(r, packet.size());
  if (!h) return invalid("bad header");
  DecodedRequest d;
  d.id = h->id;
  switch (h->type) {
    case MsgType::hello: {
      Hello m;
      m.version = r.u32();
      m.worker_id = r.u32();
      if (m.version != kProtocolVersion) r.fail();
      d.body = m;
      break;
    }
    case MsgType::verify_apop: {
      VerifyApop m;
      m.user = r.str(kMaxUser);
      m.timestamp = r.str(kMaxTimestamp);
      m.digest = r.str(kMaxProof);
      m.tls = r.boolean();
      m.address = r.str(kMaxAddress);
      d.body = m;
      break;
    }
    case MsgType::verify_plain: {
      VerifyPlain m;
      m.user = r.str(kMaxUser);
      m.password = r.str(kMaxProof);
      m.tls = r.boolean();
      m.address = r.str(kMaxAddress);
      d.body = m;
      break;
    }
    case MsgType::sasl_start: {
      SaslStart m;
      m.exchange = r.u32();
      m.mechanism = r.mechanism();
      m.initial = r.opt_str(kMaxProof);
      m.tls = r.boolean();
      m.address = r.str(kMaxAddress);
      d.body = m;
      break;
    }
    case MsgType::sasl_step: {
      SaslStep m;
      m.exchange = r.u32();
      m.response = r.opt_str(kMaxProof);
      d.body = m;
      break;
    }
    case MsgType::sasl_end:
      d.body = SaslEnd{r.u32()};
      break;
    case MsgType::record_login: {
      RecordLogin m;
      m.user = r.str(kMaxUser);
      m.when = r.i64();
      d.body = m;
      break;
    }
    case MsgType::mechanisms:
      d.body = Mechanisms{};
      break;
    case MsgType::lock_maildrop:
      d.body = LockMaildrop{r.str(kMaxUser)};
      break;
    case MsgType::unlock_maildrop:
      d.body = UnlockMaildrop{r.str(kMaxUser)};
      break;
    default:
      return invalid("unknown request type");
  }
  if (!r.at_end()) return invalid("malformed request");
  return d;
}

Result<DecodedReply> decode_reply(std::string_view packet) {
  Reader r(packet);
  const auto h = read_header(r, packet.size());
  if (!h) return invalid("bad header");
  DecodedReply d;
  d.id = h->id;
  switch (h->type) {
    case MsgType::ack:
      d.body = Ack{};
      break;
    case MsgType::auth_result:
      d.body = get_result(r);
      break;
    case MsgType::sasl_reply: {
      pop3::SaslReply m;
      const std::uint8_t kind = r.u8();
      if (kind > kLastSaslKind) r.fail();
      m.kind = static_cast<pop3::SaslReply::Kind>(kind);
      m.text = std::string(r.str(kMaxChallenge));
      m.user = std::string(r.str(kMaxUser));
      m.result = get_result(r);
      d.body = std::move(m);
      break;
    }
    case MsgType::mechanism_list: {
      MechanismList m;
      const std::size_t n = r.u8();
      if (n > kMaxMechanisms) r.fail();
      for (std::size_t i = 0; i < n && r.ok(); ++i) {
        pop3::SaslMechanism mech;
        mech.name = std::string(r.mechanism());
        mech.plaintext = r.boolean();
        m.mechanisms.push_back(std::move(mech));
      }
      d.body = std::move(m);
      break;
    }
    case MsgType::error: {
      const std::uint8_t code = r.u8();
      if (code < static_cast<std::uint8_t>(ErrorCode::malformed) ||
          code > static_cast<std::uint8_t>(ErrorCode::rate_limited)) {
        r.fail();
      }
      d.body = ErrorReply{static_cast<ErrorCode>(code)};
      break;
    }
    case MsgType::lock_status: {
      const std::uint8_t outcome = r.u8();
      if (outcome < static_cast<std::uint8_t>(LockOutcome::locked) ||
          outcome > static_cast<std::uint8_t>(LockOutcome::temporary)) {
        r.fail();
      }
      d.body = LockStatus{static_cast<LockOutcome>(outcome)};
      break;
    }
    default:
      return invalid("unknown reply type");
  }
  if (!r.at_end()) return invalid("malformed reply");
  return d;
}

Result<void> encode_user_lookup(std::uint32_t id, const UserLookup& m, std::string& out) {
  out.clear();
  Writer w(out);
  header(w, MsgType::user_lookup, id);
  w.str(m.user, kMaxUser, "user");
  return w.finish();
}

Result<void> encode_user_info(std::uint32_t id, const UserInfo& m, std::string& out) {
  out.clear();
  Writer w(out);
  header(w, MsgType::user_info, id);
  w.u8(static_cast<std::uint8_t>(m.status));
  w.boolean(m.mail_location.has_value());
  if (m.mail_location) w.str(*m.mail_location, kMaxMailLocation, "mail location");
  w.boolean(m.quota_bytes.has_value());
  if (m.quota_bytes) w.u64(*m.quota_bytes);
  w.boolean(m.quota_messages.has_value());
  if (m.quota_messages) w.u64(*m.quota_messages);
  return w.finish();
}

Result<std::pair<std::uint32_t, UserLookup>> decode_user_lookup(std::string_view packet) {
  Reader r(packet);
  const auto h = read_header(r, packet.size());
  if (!h || h->type != MsgType::user_lookup) return invalid("not a user lookup");
  UserLookup m;
  m.user = r.str(kMaxUser);
  if (!r.at_end()) return invalid("malformed user lookup");
  return std::pair{h->id, m};
}

Result<std::pair<std::uint32_t, UserInfo>> decode_user_info(std::string_view packet) {
  Reader r(packet);
  const auto h = read_header(r, packet.size());
  if (!h || h->type != MsgType::user_info) return invalid("not a user info");
  UserInfo m;
  const std::uint8_t status = r.u8();
  if (status > static_cast<std::uint8_t>(UserStatus::temporary)) r.fail();
  m.status = static_cast<UserStatus>(status);
  if (r.boolean()) m.mail_location = std::string(r.str(kMaxMailLocation));
  if (r.boolean()) m.quota_bytes = r.u64();
  if (r.boolean()) m.quota_messages = r.u64();
  // Only a found account has a location or limits of its own.
  if ((m.mail_location || m.quota_bytes || m.quota_messages) && m.status != UserStatus::found) {
    r.fail();
  }
  if (!r.at_end()) return invalid("malformed user info");
  return std::pair{h->id, std::move(m)};
}

}  // namespace apop::ipc
