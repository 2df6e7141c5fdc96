// A scripted in-memory POP3 server (FakePop) behind a fake Transport: the
// fetch engine's tests (client_fetch_test.cpp) and the migration engine's
// (client_migrate_test.cpp) run sessions against it without sockets.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "auth/base64.hpp"
#include "auth/sasl.hpp"
#include "client/fetch.hpp"
#include "client/protocol.hpp"
#include "client/transport.hpp"

namespace apop::client::test {

inline constexpr const char* kSecret = "tanstaaf-secret-1";
inline constexpr const char* kTs = "<1896.697170952@dbc.mtview.ca.us>";

// A tiny POP3 server model: answers each command line the client writes.
struct FakePop {
  std::string greeting = std::string("+OK POP3 ready ") + kTs;
  std::vector<std::string> capa = {"UIDL", "TOP", "PIPELINING", "RESP-CODES"};
  std::vector<std::string> capa_tls = {"UIDL", "TOP", "PIPELINING", "USER", "SASL PLAIN"};
  bool capa_ok = true;
  bool stls = false;       // accept STLS
  std::string stls_extra;  // injected after "+OK"
  struct Msg {
    std::string uid;
    std::string text;  // LF line endings
    long size_delta = 0;
  };
  std::vector<Msg> msgs;
  std::set<std::size_t> marked;                        // DELE'd this session
  std::set<std::string> gone;                          // committed by QUIT (uids)
  std::optional<std::vector<std::string>> uidl_lines;  // override
  std::optional<std::vector<std::string>> list_lines;  // override
  bool sasl = false;                                   // run server-side SASL exchanges
  std::unique_ptr<auth::SaslExchange> exchange;
  bool user_ok = false;
  std::optional<std::string> apop_reply;  // overrides the answer to APOP
  // Connection cut: after this many command lines, the server stops answering
  // and reads fail with "closed". -1: never.
  int cut_after = -1;
  // Cut in the middle of the reply to the command that reaches cut_after.
  bool cut_mid_reply = false;

  std::vector<std::string> commands;
  // Gets each command line first; a non-empty return is the reply (the
  // exchanges the model does not know, e.g. OAuth).
  std::function<std::string(const std::string&)> hook;

  static std::string wire(const std::string& text) {
    std::string out;
    std::size_t pos = 0;
    while (pos < text.size()) {
      std::size_t nl = text.find('\n', pos);
      std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
      if (!line.empty() && line[0] == '.') line.insert(0, ".");
      out += line + "\r\n";
      if (nl == std::string::npos) break;
      pos = nl + 1;
    }
    return out;
  }
  std::vector<std::size_t> live() const {
    std::vector<std::size_t> v;
    for (std::size_t i = 0; i < msgs.size(); ++i) {
      if (!gone.count(msgs[i].uid)) v.push_back(i);
    }
    return v;
  }
  std::uint64_t size_of(std::size_t i) const {
    return wire(msgs[i].text).size() + msgs[i].size_delta;
  }

  // Returns the reply octets for one command line.
  std::string answer(const std::string& line, bool tls) {
    auto v = live();
    auto ok = [](const std::string& s) { return "+OK " + s + "\r\n"; };
    if (hook) {
      if (std::string r = hook(line); !r.empty()) return r;
    }
    if (exchange) {
      auto decoded = line == "*" ? std::optional<std::string>() : auth::base64_decode_strict(line);
      if (!decoded) {
        exchange.reset();
        return "-ERR [AUTH] cancelled\r\n";
      }
      return sasl_step(*decoded);
    }
    std::string cmd = line.substr(0, line.find(' '));
    std::string arg = line.find(' ') == std::string::npos ? "" : line.substr(line.find(' ') + 1);
    if (cmd == "CAPA") {
      if (!capa_ok) return "-ERR no CAPA\r\n";
      std::string out = ok("caps");
      for (const auto& c : tls ? capa_tls : capa) out += c + "\r\n";
      if (stls && !tls) out += "STLS\r\n";
      return out + ".\r\n";
    }
    if (cmd == "STLS") return stls ? "+OK go\r\n" + stls_extra : "-ERR no\r\n";
    if (cmd == "APOP") {
      if (apop_reply) return *apop_reply;
      std::string expect = std::string("alice ") + apop_digest(kTs, kSecret);
      return arg == expect ? ok("in") : "-ERR [AUTH] bad\r\n";
    }
    if (cmd == "USER") {
      user_ok = arg == "alice";
      return ok("send PASS");
    }
    if (cmd == "PASS") return user_ok && arg == kSecret ? ok("in") : "-ERR [AUTH] bad\r\n";
    if (cmd == "AUTH" && sasl) {
      std::string mech = arg.substr(0, arg.find(' '));
      exchange = auth::make_sasl_exchange(
          mech,
          [](std::string_view u) -> std::optional<auth::SaslCredentials> {
            if (u != "alice") return std::nullopt;
            auth::SaslCredentials c;
            c.plaintext = kSecret;
            return c;
          },
          "<cram.1@fake>");
      if (!exchange) return "-ERR unknown\r\n";
      if (arg.find(' ') != std::string::npos) {
        auto ir = auth::base64_decode_strict(arg.substr(arg.find(' ') + 1));
        return sasl_step(ir ? std::optional<std::string>(*ir) : std::nullopt, true);
      }
      return sasl_step(std::nullopt, true);
    }
    if (cmd == "STAT") {
      std::uint64_t total = 0;
      for (auto i : v) total += size_of(i);
      return ok(std::to_string(v.size()) + " " + std::to_string(total));
    }
    if (cmd == "UIDL") {
      std::string out = ok("uids");
      if (uidl_lines) {
        for (const auto& l : *uidl_lines) out += l + "\r\n";
      } else {
        for (std::size_t k = 0; k < v.size(); ++k)
          out += std::to_string(k + 1) + " " + msgs[v[k]].uid + "\r\n";
      }
      return out + ".\r\n";
    }
    if (cmd == "LIST") {
      std::string out = ok("list");
      if (list_lines) {
        for (const auto& l : *list_lines) out += l + "\r\n";
      } else {
        for (std::size_t k = 0; k < v.size(); ++k) {
          out += std::to_string(k + 1) + " " + std::to_string(size_of(v[k])) + "\r\n";
        }
      }
      return out + ".\r\n";
    }
    if (cmd == "RETR") {
      std::size_t n = std::stoul(arg);
      if (n == 0 || n > v.size()) return "-ERR no such message\r\n";
      return ok("msg") + wire(msgs[v[n - 1]].text) + ".\r\n";
    }
    if (cmd == "DELE") {
      std::size_t n = std::stoul(arg);
      if (n == 0 || n > v.size()) return "-ERR no such message\r\n";
      marked.insert(v[n - 1]);
      return ok("deleted");
    }
    if (cmd == "QUIT") {
      for (auto i : marked) gone.insert(msgs[i].uid);
      marked.clear();
      return ok("bye");
    }
    return "-ERR unknown command\r\n";
  }

  std::string sasl_step(std::optional<std::string> in, bool first = false) {
    auth::SaslStep st = exchange->step(first ? in : std::optional<std::string_view>(*in));
    switch (st.kind) {
      case auth::SaslStep::Kind::challenge:
        return "+ " + auth::base64_encode(st.data) + "\r\n";
      case auth::SaslStep::Kind::success:
        exchange.reset();
        return "+OK logged in\r\n";
      case auth::SaslStep::Kind::failure:
        break;
    }
    exchange.reset();
    return "-ERR [AUTH] failed\r\n";
  }
};

class FakeTransport final : public Transport {
 public:
  explicit FakeTransport(FakePop& pop) : pop_(pop) { out_ = pop.greeting + "\r\n"; }

  Result<void> write(std::string_view data) override {
    writes.emplace_back(data);
    if (cut_) return fail(NetFailure::closed);
    in_ += data;
    std::size_t nl;
    while ((nl = in_.find("\r\n")) != std::string::npos) {
      std::string line = in_.substr(0, nl);
      in_.erase(0, nl + 2);
      pop_.commands.push_back(line);
      std::string reply = pop_.answer(line, tls_.active);
      if (pop_.cut_after >= 0 && static_cast<int>(pop_.commands.size()) >= pop_.cut_after) {
        if (pop_.cut_mid_reply) out_ += reply.substr(0, reply.size() / 2);
        cut_ = true;
        return {};
      }
      out_ += reply;
    }
    return {};
  }
  Result<std::string> read_line(std::size_t max) override {
    std::size_t nl = out_.find('\n', pos_);
    if (nl == std::string::npos) return fail(NetFailure::closed);
    std::size_t end = nl > pos_ && out_[nl - 1] == '\r' ? nl - 1 : nl;
    if (end - pos_ > max) return fail(NetFailure::overlong, Errc::invalid);
    std::string line = out_.substr(pos_, end - pos_);
    pos_ = nl + 1;
    return line;
  }
  std::size_t buffered() const override { return out_.size() - pos_; }
  Result<void> start_tls(const TlsOptions&) override {
    if (buffered() != 0) return fail(NetFailure::tls_handshake, Errc::invalid);
    tls_.active = true;
    tls_.protocol = "TLSv1.3";
    return {};
  }
  const TlsInfo& tls() const override { return tls_; }
  NetFailure last_failure() const override { return last_; }
  void set_implicit_tls() { tls_.active = true; }

  std::vector<std::string> writes;

 private:
  Error fail(NetFailure f, Errc c = Errc::temporary) {
    last_ = f;
    return make_error(c, "fake transport failure");
  }
  FakePop& pop_;
  std::string out_;
  std::size_t pos_ = 0;
  std::string in_;
  bool cut_ = false;
  TlsInfo tls_;
  NetFailure last_ = NetFailure::none;
};

}  // namespace apop::client::test
