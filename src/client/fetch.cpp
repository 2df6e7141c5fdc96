#include "client/fetch.hpp"

#include <algorithm>
#include <cctype>
#include <ctime>
#include <map>
#include <optional>
#include <set>

#include "auth/base64.hpp"
#include "auth/sasl_crypto.hpp"
#include "common/limits.hpp"
#include "common/text.hpp"

namespace apop::client {
namespace {

// RFC 2449 §4: response lines are at most 512 octets including CRLF.
constexpr std::size_t kMaxReply = limits::kMaxResponseLine - 2;

// Server text in errors and traces: printable ASCII, cut at 200 octets.
std::string shown(std::string_view s, std::size_t max = 200) { return printable(s, {.max = max}); }

// The address of the first Return-Path header, "MAILER-DAEMON" if none/empty.
std::string envelope_from(std::string_view msg) {
  std::size_t pos = 0;
  while (pos < msg.size()) {
    std::size_t nl = msg.find('\n', pos);
    std::string_view line =
        msg.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
    if (line.empty() || line == "\r") break;  // end of header
    if (istarts_with(line, "Return-Path:")) {
      std::size_t lt = line.find('<');
      std::size_t gt = line.find('>', lt == std::string_view::npos ? 0 : lt);
      if (lt != std::string_view::npos && gt != std::string_view::npos && gt > lt + 1) {
        std::string_view addr = line.substr(lt + 1, gt - lt - 1);
        bool clean = addr.size() <= 254 && std::all_of(addr.begin(), addr.end(), [](char c) {
                       auto u = static_cast<unsigned char>(c);
                       return u > 0x20 && u < 0x7f;
                     });
        if (clean) return std::string(addr);
      }
      break;
    }
    if (nl == std::string_view::npos) break;
    pos = nl + 1;
  }
  return "MAILER-DAEMON";
}

class Session {
 public:
  Session(Transport& t, Destination& d, AccountState& st, const FetchOptions& o)
      : t_(t), d_(d), st_(st), o_(o) {}

  FetchSummary run() {
    auto start = std::chrono::steady_clock::now();
    (void)steps();
    s_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    s_.tls = t_.tls().active;
    s_.tls_protocol = t_.tls().protocol;
    if (s_.status == FetchStatus::ok && s_.store_failed > 0) {
      s_.status = FetchStatus::store_failed;
      s_.error = std::to_string(s_.store_failed) +
                 " message(s) could not be stored and stay on the server";
    }
    return std::move(s_);
  }

 private:
  // ---- failure and trace helpers -----------------------------------------
  bool fail(FetchStatus st, std::string msg) {
    if (s_.status == FetchStatus::ok) {
      s_.status = st;
      s_.error = std::move(msg);
    }
    return false;
  }
  bool net_fail(const Error& e) {
    FetchStatus st = status_for(t_.last_failure());
    if (e.code == Errc::invalid && t_.last_failure() == NetFailure::overlong)
      st = FetchStatus::protocol;
    return fail(st, e.message);
  }
  void warn(std::string w) {
    if (o_.warn) o_.warn(w);
    s_.warnings.push_back(std::move(w));
  }
  void trace(std::string_view dir, std::string_view text) {
    if (o_.trace) o_.trace(std::string(dir) + shown(text, 300));
  }

  // ---- I/O ---------------------------------------------------------------
  // `shown` replaces the command in the trace (secrets); empty: the command.
  bool send(std::string_view cmd, std::string_view shown = {}) {
    trace("C: ", shown.empty() ? cmd : shown);
    std::string wire(cmd);
    wire += "\r\n";
    if (auto w = t_.write(wire); !w) return net_fail(w.error());
    return true;
  }
  // Several commands in one write (the server offers PIPELINING, RFC 2449).
  bool send_batch(std::initializer_list<std::string_view> cmds) {
    std::string wire;
    for (std::string_view c : cmds) {
      trace("C: ", c);
      wire += c;
      wire += "\r\n";
    }
    if (auto w = t_.write(wire); !w) return net_fail(w.error());
    return true;
  }
  std::optional<std::string> line(std::size_t max, bool traced = true) {
    auto l = t_.read_line(max);
    if (!l) {
      net_fail(l.error());
      return std::nullopt;
    }
    if (traced) trace("S: ", *l);
    return std::move(*l);
  }
  std::optional<Reply> reply(std::string* raw = nullptr) {
    auto l = line(kMaxReply);
    if (!l) return std::nullopt;
    auto r = parse_reply(*l);
    if (!r) {
      fail(FetchStatus::protocol, r.error().message);
      return std::nullopt;
    }
    if (raw != nullptr) *raw = std::move(*l);
    return std::move(*r);
  }
  // The lines of a multi-line body, unstuffed, at most max_lines of them.
  std::optional<std::vector<std::string>> multiline(std::size_t max_lines, std::string_view what) {
    std::vector<std::string> out;
    for (;;) {
      auto l = line(kMaxReply, false);
      if (!l) return std::nullopt;
      if (*l == ".") return out;
      if (out.size() >= max_lines) {
        fail(FetchStatus::protocol,
             std::string(what) + " reply has more lines than allowed or announced");
        return std::nullopt;
      }
      trace("S: ", *l);
      if (!l->empty() && l->front() == '.') l->erase(0, 1);
      out.push_back(std::move(*l));
    }
  }

  // A listing's lines (unstuffed) fed to `feed` as they arrive, at most
  // max_lines of them, none kept here (issue 17 item 9).
  template <typename Parser>
  bool listing(Parser& parser, std::uint64_t max_lines, std::string_view what) {
    for (std::uint64_t n = 0;; ++n) {
      auto l = line(kMaxReply, false);
      if (!l) return false;
      if (*l == ".") return true;
      if (n >= max_lines) {
        return fail(FetchStatus::protocol,
                    std::string(what) + " reply has more lines than STAT announced messages");
      }
      trace("S: ", *l);
      std::string_view v(*l);
      if (!v.empty() && v.front() == '.') v.remove_prefix(1);
      if (auto f = parser.feed(v); !f) {
        return fail(FetchStatus::protocol, f.error().message + listing_hint());
      }
    }
  }
  std::string listing_hint() const {
    return " (limits: --max-messages " + std::to_string(o_.listing.max_messages) +
           ", --max-listing-bytes " + std::to_string(o_.listing.max_bytes) + ")";
  }

  Capabilities capa() {
    Capabilities none;
    if (!send("CAPA")) return none;
    auto r = reply();
    if (!r) return none;
    if (!r->ok) return none;
    auto lines = multiline(limits::kMaxCapaLines, "CAPA");
    if (!lines) return none;
    return parse_capa(*lines);
  }

  // ---- the session ---------------------------------------------------------
  bool steps() {
    std::string greeting;
    auto g = reply(&greeting);
    if (!g) return false;
    s_.greeting = shown(greeting);
    if (!g->ok)
      return fail(FetchStatus::protocol, "the server refused the connection: " + shown(greeting));
    Challenge challenge = extract_challenge(greeting);

    Capabilities caps = capa();
    if (s_.status != FetchStatus::ok) return false;
    const bool stls_offered = caps.stls;
    if (!t_.tls().active) {
      bool want =
          o_.tls_mode == TlsMode::starttls || (o_.tls_mode == TlsMode::automatic && caps.stls);
      if (o_.tls_mode == TlsMode::implicit)
        return fail(FetchStatus::error, "implicit TLS is not active");
      if (want) {
        if (!starttls()) return false;
        caps = capa();  // RFC 2595 §4: forget what was learnt before TLS
        if (s_.status != FetchStatus::ok) return false;
      }
    }
    const bool tls = t_.tls().active;

    Offer offer = make_offer(tls || stls_offered, challenge, caps);
    s_.offer = offer;
    if (st_.has_offer()) {
      std::string lost = downgrade(st_.last_offer(), offer);
      if (!lost.empty()) {
        std::string msg = "downgrade detected: the server no longer offers " + lost +
                          ", which it offered last time (a man in the middle?)";
        if (!o_.accept_downgrade) {
          return fail(FetchStatus::security,
                      msg +
                          "; nothing was sent. Use --accept-downgrade if the change is "
                          "legitimate");
        }
        warn(msg + "; accepted (--accept-downgrade)");
      }
    }

    if (o_.auth == AuthMech::automatic && challenge.status == Challenge::Status::invalid) {
      warn("ignoring the server's invalid APOP challenge: " + challenge.reason);
    }
    AuthContext ctx{tls, challenge, caps, o_.allow_plaintext};
    auto mech = choose_auth(o_.auth, ctx);
    if (!mech) {
      return fail(
          mech.error().code == Errc::permanent ? FetchStatus::security : FetchStatus::auth_failed,
          mech.error().message);
    }
    s_.auth = std::string(auth_mech_name(*mech));
    if (!authenticate(*mech, challenge)) return false;

    // A full save: it also rewrites away any torn last line a kill left, and
    // opens the file that record_seen appends to during the transaction.
    st_.set_offer(offer);
    if (auto sv = st_.save(); !sv)
      return fail(FetchStatus::error, "cannot save the state file: " + sv.error().message);

    return transaction(caps);
  }

  bool starttls() {
    if (!send("STLS")) return false;
    auto r = reply();
    if (!r) return false;
    if (!r->ok) {
      return fail(FetchStatus::tls_failed,
                  "the server refused STLS (" + shown(r->text) + ")" +
                      (o_.tls_mode == TlsMode::automatic ? " although it offered it" : ""));
    }
    if (t_.buffered() != 0) {
      return fail(
          FetchStatus::security,
          "STLS response injection: the server sent data after +OK before the TLS handshake");
    }
    if (auto h = t_.start_tls(o_.tls); !h) {
      if (h.error().code == Errc::invalid) return fail(FetchStatus::security, h.error().message);
      return net_fail(h.error());
    }
    trace("-- ", "TLS " + t_.tls().protocol + " " + t_.tls().cipher);
    return true;
  }

  // ---- authentication --------------------------------------------------------
  bool auth_reply_ok(const Reply& r, std::string_view what) {
    if (r.ok) return true;
    if (r.code == "IN-USE" || r.code.rfind("SYS", 0) == 0) {
      return fail(FetchStatus::error,
                  std::string(what) + " failed: " + shown(r.text) + " [" + shown(r.code) + "]");
    }
    return fail(FetchStatus::auth_failed, std::string(what) + " rejected: authentication failed" +
                                              (r.text.empty() ? "" : " (" + shown(r.text) + ")"));
  }

  // Reads a continuation; a final -ERR is an authentication failure.
  std::optional<std::string> continuation(std::string_view what) {
    auto l = line(limits::kMaxSaslLine);
    if (!l) return std::nullopt;
    if (is_continuation(*l)) {
      auto c = parse_continuation(*l);
      if (!c) {
        fail(FetchStatus::protocol, std::string(what) + ": " + c.error().message);
        return std::nullopt;
      }
      return std::move(*c);
    }
    auto r = parse_reply(*l);
    if (!r) {
      fail(FetchStatus::protocol, std::string(what) + ": " + r.error().message);
    } else {
      auth_reply_ok(*r, what);
      if (r->ok)
        fail(FetchStatus::protocol,
             std::string(what) + ": unexpected +OK in the middle of the exchange");
    }
    return std::nullopt;
  }

  bool finish(std::string_view what) {
    auto r = reply();
    if (!r) return false;
    return auth_reply_ok(*r, what);
  }

  bool authenticate(AuthMech m, const Challenge& ch) {
    const std::string& u = o_.user;
    const std::string& pw = o_.password;
    // Both end up in command lines: a CR or LF would inject commands.
    auto bad = [](std::string_view v) {
      return v.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos;
    };
    if (u.empty() || bad(u) || u.find(' ') != std::string::npos)
      return fail(FetchStatus::error, "invalid user name");
    if (bad(pw)) return fail(FetchStatus::error, "the password contains a line break or NUL");
    switch (m) {
      case AuthMech::apop: {
        // Re-checked here: nothing derived from the password leaves unless the
        // challenge is a strict msg-id.
        if (!is_valid_challenge(ch.value))
          return fail(FetchStatus::security, "invalid APOP challenge");
        if (!send("APOP " + u + " " + apop_digest(ch.value, pw), "APOP " + u + " <digest hidden>"))
          return false;
        return finish("APOP");
      }
      case AuthMech::user: {
        if (!send("USER " + u)) return false;
        auto r = reply();
        if (!r) return false;
        if (!auth_reply_ok(*r, "USER")) return false;
        if (!send("PASS " + pw, "PASS <hidden>")) return false;
        return finish("PASS");
      }
      case AuthMech::plain: {
        if (!send("AUTH PLAIN")) return false;
        if (!continuation("AUTH PLAIN")) return false;
        if (!send(auth::base64_encode(plain_response(u, pw)), "<hidden>")) return false;
        return finish("AUTH PLAIN");
      }
      case AuthMech::login: {
        if (!send("AUTH LOGIN")) return false;
        if (!continuation("AUTH LOGIN")) return false;
        if (!send(auth::base64_encode(u), "<hidden>")) return false;
        if (!continuation("AUTH LOGIN")) return false;
        if (!send(auth::base64_encode(pw), "<hidden>")) return false;
        return finish("AUTH LOGIN");
      }
      case AuthMech::cram_md5: {
        if (!send("AUTH CRAM-MD5")) return false;
        auto c = continuation("AUTH CRAM-MD5");
        if (!c) return false;
        if (!send(auth::base64_encode(cram_md5_response(u, pw, *c)), "<hidden>")) return false;
        return finish("AUTH CRAM-MD5");
      }
      case AuthMech::scram_sha_256:
        return scram();
      case AuthMech::xoauth2:
      case AuthMech::oauthbearer:
        return oauth(m);
      case AuthMech::automatic:
        break;
    }
    return fail(FetchStatus::error, "no mechanism chosen");
  }

  bool scram() {
    ScramClient c(o_.user, o_.password);
    std::string first = auth::base64_encode(c.client_first());
    std::string cmd = "AUTH SCRAM-SHA-256 " + first;
    if (cmd.size() + 2 <= limits::kMaxCommandLine) {
      if (!send(cmd, "AUTH SCRAM-SHA-256 <client-first>")) return false;
    } else {
      if (!send("AUTH SCRAM-SHA-256")) return false;
      if (!continuation("AUTH SCRAM-SHA-256")) return false;
      if (!send(first, "<client-first>")) return false;
    }
    auto server_first = continuation("AUTH SCRAM-SHA-256");
    if (!server_first) return false;
    auto final_msg = c.client_final(*server_first);
    if (!final_msg) {
      (void)send("*");
      return fail(FetchStatus::security, "refusing SCRAM-SHA-256: " + final_msg.error().message);
    }
    if (!send(auth::base64_encode(*final_msg), "<client-final hidden>")) return false;
    auto l = line(limits::kMaxSaslLine);
    if (!l) return false;
    if (!is_continuation(*l)) {
      auto r = parse_reply(*l);
      if (!r) return fail(FetchStatus::protocol, r.error().message);
      if (!auth_reply_ok(*r, "AUTH SCRAM-SHA-256")) return false;
      return fail(FetchStatus::security,
                  "the SCRAM server accepted the login without proving it knows the password; "
                  "session abandoned");
    }
    auto server_final = parse_continuation(*l);
    if (!server_final)
      return fail(FetchStatus::protocol, "AUTH SCRAM-SHA-256: " + server_final.error().message);
    if (auto v = c.verify_server_final(*server_final); !v) {
      (void)send("*");
      return fail(v.error().code == Errc::auth_failed && server_final->rfind("e=", 0) == 0
                      ? FetchStatus::auth_failed
                      : FetchStatus::security,
                  v.error().message);
    }
    if (!send("")) return false;
    return finish("AUTH SCRAM-SHA-256");
  }

  // XOAUTH2 / OAUTHBEARER (RFC 7628 over RFC 5034): the token is the
  // password. Success is "+OK"; a rejected token draws an error challenge
  // "+ base64(JSON)" (RFC 7628 §3.2.2), which the client acknowledges (RFC
  // 7628 §3.2.3: the dummy %x01; XOAUTH2: an empty response) to get the final
  // -ERR; the JSON's status is the error reported.
  bool oauth(AuthMech m) {
    namespace sd = auth::sasl_detail;
    const bool bearer = m == AuthMech::oauthbearer;
    const std::string what = bearer ? "AUTH OAUTHBEARER" : "AUTH XOAUTH2";
    if (o_.password.empty()) return fail(FetchStatus::error, "the OAuth token is empty");
    // %x01 separates the fields: one in the user or the token would forge one.
    if (o_.password.find('\x01') != std::string::npos || o_.user.find('\x01') != std::string::npos)
      return fail(FetchStatus::error, "the user name or the OAuth token contains a ^A (0x01)");
    std::string ir = bearer ? oauthbearer_response(o_.user, o_.password, o_.host, o_.port)
                            : xoauth2_response(o_.user, o_.password);
    std::string b64 = auth::base64_encode(ir);
    sd::cleanse(ir);
    std::string cmd = what + " " + b64;
    bool sent_ok = false;
    // RFC 5034 §4: an initial response that would make the command longer
    // than 255 octets goes after the server's empty challenge instead (the
    // usual case: a JWT is longer).
    if (cmd.size() + 2 <= limits::kMaxCommandLine) {
      sent_ok = send(cmd, what + " <hidden>");
    } else {
      sent_ok = send(what) && continuation(what) && send(b64, "<hidden>");
    }
    sd::cleanse(cmd);
    sd::cleanse(b64);
    if (!sent_ok) return false;

    auto l = line(limits::kMaxSaslLine);
    if (!l) return false;
    if (!is_continuation(*l)) {
      auto r = parse_reply(*l);
      if (!r) return fail(FetchStatus::protocol, what + ": " + r.error().message);
      return auth_reply_ok(*r, what);
    }
    std::string_view b64_error(*l);
    b64_error.remove_prefix(1);
    if (!b64_error.empty() && b64_error.front() == ' ') b64_error.remove_prefix(1);
    auto err = decode_oauth_error(b64_error);
    if (!send(bearer ? std::string(kOAuthBearerErrorAck) : std::string())) return false;
    auto r = reply();
    if (!r) return false;
    std::string why =
        err ? "token rejected: " + err->describe()
            : "token rejected (the server's error is unreadable: " + err.error().message + ")";
    if (r->ok) {
      return fail(FetchStatus::protocol,
                  what + ": +OK after an error challenge (" + why + "); session abandoned");
    }
    if (!r->text.empty()) why += "; the server said: " + shown(r->text);
    return fail(FetchStatus::auth_failed, why);
  }

  // ---- TRANSACTION -------------------------------------------------------
  // What STAT, UIDL and LIST said about the maildrop.
  struct Listing {
    std::uint64_t count = 0;
    UidlListing uids;
    bool have_uidl = false;
    ListParser::Sizes sizes;  // (msg, size), sorted by msg

    // The size LIST announced for `msg` (0 if none).
    std::uint64_t announced(std::uint64_t msg) const {
      const auto sz = std::lower_bound(sizes.begin(), sizes.end(),
                                       std::pair<std::uint64_t, std::uint64_t>{msg, 0});
      return sz != sizes.end() && sz->first == msg ? sz->second : 0;
    }
  };
  // What this session fetches and deletes.
  struct Plan {
    std::vector<std::uint64_t> to_fetch;
    std::vector<std::uint64_t> to_delete;  // stored (now or in an earlier run)
    std::uint64_t total_bytes = 0;
  };

  bool transaction(const Capabilities& caps) {
    Listing listing;
    if (!list_maildrop(listing, caps.pipelining)) return false;
    const std::uint64_t max_msg = o_.max_message != 0 ? o_.max_message : limits::kMaxFetchMessage;
    Plan plan = make_plan(listing, max_msg);
    if (o_.dry_run) {
      if (!send("QUIT")) return false;
      return reply().has_value();
    }
    const std::size_t window = caps.pipelining ? std::max<std::size_t>(1, o_.pipeline_window) : 1;
    if (!retrieve_all(listing, plan, max_msg, window)) return false;
    std::uint64_t dele_ok = 0;
    const bool deleting = !o_.keep && !plan.to_delete.empty();
    if (deleting && !delete_all(plan.to_delete, window, dele_ok)) return false;
    return quit_and_save(listing, dele_ok, deleting && window > 1);
  }

  // STAT, then UIDL (required with --keep) and LIST when there is mail;
  // with PIPELINING all three in one write (one round trip, not three), the
  // replies read in order whatever STAT says.
  bool list_maildrop(Listing& out, bool pipelined) {
    if (!(pipelined ? send_batch({"STAT", "UIDL", "LIST"}) : send("STAT"))) return false;
    auto r = reply();
    if (!r) return false;
    if (!r->ok) return fail(FetchStatus::protocol, "STAT failed: " + shown(r->text));
    auto stat = parse_stat(r->text, o_.listing.max_messages);
    if (!stat) return fail(FetchStatus::protocol, stat.error().message + listing_hint());
    s_.on_server = stat->count;
    out.count = stat->count;
    if (stat->count == 0 && !pipelined) return true;

    if (!pipelined && !send("UIDL")) return false;
    auto u = reply();
    if (!u) return false;
    if (u->ok) {
      UidlParser parser(stat->count, o_.listing.max_bytes);
      if (!listing(parser, stat->count, "UIDL")) return false;
      auto done = parser.finish();
      if (!done) return fail(FetchStatus::protocol, done.error().message);
      out.uids = std::move(*done);
      out.have_uidl = true;
    } else if (o_.keep) {
      return fail(FetchStatus::error, "--keep needs UIDL, which the server refused");
    }
    if (!pipelined && !send("LIST")) return false;
    auto l = reply();
    if (!l) return false;
    if (!l->ok) return fail(FetchStatus::protocol, "LIST failed: " + shown(l->text));
    ListParser parser(stat->count);
    if (!listing(parser, stat->count, "LIST")) return false;
    out.sizes = parser.take();
    return true;
  }

  // Which messages to fetch (not stored before, within the size limit) and
  // which to delete at once (stored by a run that was cut before QUIT).
  Plan make_plan(const Listing& listing, std::uint64_t max_msg) {
    Plan plan;
    for (const auto& [msg, size] : listing.sizes) {
      const std::string_view uid = listing.uids.find(msg);
      if (!uid.empty() && st_.seen(uid)) {
        if (!o_.keep) plan.to_delete.push_back(msg);  // stored by a run that was cut before QUIT
        continue;
      }
      if (o_.keep && uid.empty()) {
        warn("message " + std::to_string(msg) + " has no UIDL; skipped in --keep mode");
        continue;
      }
      if (o_.max_message_size != 0 && size > o_.max_message_size) {
        warn("message " + std::to_string(msg) + " is " + std::to_string(size) +
             " octets, above max_message_size " + std::to_string(o_.max_message_size) +
             "; left on the server");
        ++s_.too_big;
        continue;
      }
      if (size > max_msg) {
        warn("message " + std::to_string(msg) + " is " + std::to_string(size) +
             " octets, above the limit of " + std::to_string(max_msg) + "; left on the server");
        ++s_.store_failed;
        continue;
      }
      if (o_.fetch_limit != 0 && plan.to_fetch.size() >= o_.fetch_limit) {
        ++s_.deferred;
        continue;
      }
      plan.to_fetch.push_back(msg);
      plan.total_bytes += size;
    }
    s_.new_messages = plan.to_fetch.size();
    s_.new_bytes = plan.total_bytes;
    return plan;
  }

  // Pipelining: sends "VERB N" for msgs[next...] while fewer than `window`
  // commands are unanswered (`answered` of them were), in one write; only
  // once no more than half the window is unanswered, so a batch of commands
  // goes out (and wakes the server) every window/2 replies, not one per reply.
  // `last`: a command sent after the last of msgs, in the same write.
  bool send_ahead(std::string_view verb, const std::vector<std::uint64_t>& msgs, std::size_t& next,
                  std::size_t answered, std::size_t window, std::string_view last = {}) {
    if (next - answered > window / 2) return true;
    std::string batch;
    while (next < msgs.size() && next - answered < window) {
      std::string cmd = std::string(verb) + " " + std::to_string(msgs[next]);
      trace("C: ", cmd);
      batch += cmd + "\r\n";
      ++next;
      if (next == msgs.size() && !last.empty()) {
        trace("C: ", last);
        batch += std::string(last) + "\r\n";
      }
    }
    if (batch.empty()) return true;
    if (auto w = t_.write(batch); !w) return net_fail(w.error());
    return true;
  }

  // RETR of every planned message, each stored as it arrives.
  bool retrieve_all(const Listing& listing, Plan& plan, std::uint64_t max_msg, std::size_t window) {
    FetchOptions::Progress prog;
    prog.total = plan.to_fetch.size();
    prog.total_bytes = plan.total_bytes;
    if (o_.progress) o_.progress(prog);
    std::size_t sent = 0;
    for (std::size_t done = 0; done < plan.to_fetch.size(); ++done) {
      if (stop_requested()) {
        // Only the RETRs already sent are answered (and stored): the rest
        // stay on the server for the next session.
        s_.stopped = true;
        if (done >= sent) break;
      } else if (!send_ahead("RETR", plan.to_fetch, sent, done, window)) {
        return false;
      }
      const std::uint64_t msg = plan.to_fetch[done];
      auto rr = reply();
      if (!rr) return false;
      if (!rr->ok) {
        warn("RETR " + std::to_string(msg) + " failed (" + shown(rr->text) +
             "); left on the server");
        ++s_.store_failed;
      } else {
        if (!receive_and_store(msg, listing, max_msg, plan)) return false;
        prog.bytes += listing.announced(msg);
      }
      prog.done = done + 1;
      if (o_.progress) o_.progress(prog);
    }
    return true;
  }

  // The body of RETR `msg` (its +OK read), checked against LIST's size,
  // then stored; a stored message is marked seen in the state file at once
  // and, without --keep, planned for deletion.
  bool receive_and_store(std::uint64_t msg, const Listing& listing, std::uint64_t max_msg,
                         Plan& plan) {
    BodyDecoder body(max_msg);
    for (;;) {
      auto l = line(limits::kMaxClientBodyLine, false);
      if (!l) return false;
      auto f = body.feed(*l);
      if (!f)
        return fail(FetchStatus::protocol,
                    "message " + std::to_string(msg) + ": " + f.error().message);
      if (*f) break;
    }
    const std::uint64_t announced = listing.announced(msg);
    if (!size_consistent(announced, body)) {
      return fail(FetchStatus::protocol, "message " + std::to_string(msg) + ": LIST announced " +
                                             std::to_string(announced) +
                                             " octets but the server sent " +
                                             std::to_string(body.wire_octets()) +
                                             " (lying sizes); nothing more fetched or deleted");
    }
    MessageMeta meta;
    meta.uidl = std::string(listing.uids.find(msg));
    meta.envelope_from = envelope_from(body.text());
    meta.received_at = static_cast<std::int64_t>(std::time(nullptr));
    const std::uint64_t octets = body.text().size();
    auto stored = d_.store(body.text(), meta);
    if (!stored) {
      ++s_.store_failed;
      warn("message " + std::to_string(msg) + " not stored (" + stored.error().message +
           "); left on the server");
      return true;
    }
    ++s_.stored;
    s_.bytes += octets;
    if (!meta.uidl.empty()) {
      if (auto sv = st_.record_seen(meta.uidl); !sv) {
        return fail(FetchStatus::error,
                    "message stored but the state file could not be saved: " + sv.error().message);
      }
    }
    if (!o_.keep) plan.to_delete.push_back(msg);
    return true;
  }

  bool stop_requested() const {
    return o_.stop != nullptr && o_.stop->load(std::memory_order_relaxed);
  }

  // DELE of every stored message; `dele_ok` counts the +OKs. Pipelined
  // (window > 1), QUIT goes out with the last DELE (one round trip less);
  // quit_and_save() then reads its reply.
  bool delete_all(std::vector<std::uint64_t>& to_delete, std::size_t window,
                  std::uint64_t& dele_ok) {
    std::sort(to_delete.begin(), to_delete.end());
    std::size_t sent = 0;
    for (std::size_t done = 0; done < to_delete.size(); ++done) {
      if (!send_ahead("DELE", to_delete, sent, done, window, window > 1 ? "QUIT" : "")) {
        return false;
      }
      auto dr = reply();
      if (!dr) return false;
      if (dr->ok) {
        ++dele_ok;
      } else {
        warn("DELE " + std::to_string(to_delete[done]) + " failed: " + shown(dr->text));
      }
    }
    return true;
  }

  // QUIT commits the deletions (RFC 1939 §6); the state then forgets UIDLs
  // no longer on the server.
  // `quit_sent`: QUIT went out with the last DELE.
  bool quit_and_save(const Listing& listing, std::uint64_t dele_ok, bool quit_sent) {
    if (!quit_sent && !send("QUIT")) return false;
    auto q = reply();
    if (!q) return false;
    if (q->ok) {
      s_.deleted = dele_ok;
    } else if (dele_ok > 0) {
      warn("QUIT failed (" + shown(q->text) + "): the server did not commit the deletions");
    }
    if (listing.have_uidl) {
      const UidlListing& uids = listing.uids;
      st_.retain_only_if([&uids](std::string_view uid) { return uids.contains_uid(uid); });
    }
    if (auto sv = st_.save(); !sv)
      return fail(FetchStatus::error, "cannot save the state file: " + sv.error().message);
    return true;
  }

  Transport& t_;
  Destination& d_;
  AccountState& st_;
  const FetchOptions& o_;
  FetchSummary s_;
};

}  // namespace

FetchStatus status_for(NetFailure f) {
  switch (f) {
    case NetFailure::resolve:
    case NetFailure::connect:
    case NetFailure::timeout:
    case NetFailure::closed:
    case NetFailure::io:
      return FetchStatus::network;
    case NetFailure::tls_handshake:
    case NetFailure::tls_verify:
      return FetchStatus::tls_failed;
    case NetFailure::overlong:
      return FetchStatus::protocol;
    case NetFailure::none:
      break;
  }
  return FetchStatus::error;
}

FetchSummary run_session(Transport& t, Destination& dest, AccountState& state,
                         const FetchOptions& opts) {
  return Session(t, dest, state, opts).run();
}

}  // namespace apop::client
