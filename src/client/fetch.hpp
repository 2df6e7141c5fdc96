// The `apop fetch` engine: one POP3 session over a Transport that downloads
// new mail into a Destination, remembering per account (AccountState) what it
// has stored and what the server offered.
//
// Safety properties (each covered by tests/unit/client_fetch_test.cpp):
//  - No APOP digest is sent unless the greeting's challenge passed the strict
//    msg-id check (CVE-2007-1558); no password is sent in the clear unless
//    allow_plaintext; a SCRAM server must prove it knows the password.
//  - STLS: bytes after "+OK" before the handshake abort the session.
//  - Downgrade: if the server offers less than last time (TLS, APOP,
//    SCRAM-SHA-256) the session stops before authenticating unless
//    accept_downgrade.
//  - Delete mode: DELE is sent only for messages Destination::store()
//    accepted (durably), and DELEs take effect only at QUIT (RFC 1939 §6), so
//    a cut connection loses nothing. Each stored UIDL is recorded in the
//    state file right after store(), so after a cut the next run deletes
//    already-stored messages without storing them again (at worst the one
//    message between store() and the state save is fetched twice).
//  - Keep mode: only messages whose UIDL is not in the state are fetched.
//  - Strict, bounded parsing of every reply (protocol.hpp).
//
// Contract: run_session() owns nothing; the transport, destination and state
// must outlive the call and are used from the calling thread only. Callbacks
// are called synchronously from that thread. The password is never passed to
// the trace callback, logged or put in the summary.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "client/account_state.hpp"
#include "client/destination.hpp"
#include "client/protocol.hpp"
#include "client/transport.hpp"

namespace apop::client {

enum class TlsMode { implicit, starttls, automatic, none };

// Exit statuses of `apop fetch` (documented in README.md "## apop fetch").
enum class FetchStatus : int {
  ok = 0,            // success, also when nothing was new
  error = 1,         // internal or other error (state file, maildrop in use, ...)
  store_failed = 2,  // some messages could not be stored (they stay on the server)
  auth_failed = 3,   // authentication failed or no usable mechanism offered
  tls_failed = 4,    // handshake, certificate, STLS required but unavailable
  protocol = 5,      // malformed or overlong replies, lying sizes, listing above the limits
  network = 6,       // resolve, connect, timeout, connection cut
  security = 7,      // invalid APOP challenge, downgrade, STLS injection, plaintext refused
};

struct FetchOptions {
  std::string user;
  std::string password;  // never logged; the bearer token for xoauth2/oauthbearer
  // The server as the user named it, for OAUTHBEARER's host= and port=
  // (RFC 7628 §3.1); empty / 0: left out.
  std::string host;
  std::uint16_t port = 0;
  AuthMech auth = AuthMech::automatic;
  TlsMode tls_mode = TlsMode::automatic;
  TlsOptions tls;  // for STLS (implicit TLS is done by connect())
  bool allow_plaintext = false;
  bool keep = false;
  bool accept_downgrade = false;
  // List what would be fetched (FetchSummary::new_messages, new_bytes) and
  // QUIT: no RETR, no DELE, the state is not changed.
  bool dry_run = false;
  std::size_t pipeline_window = 16;  // RETRs in flight when PIPELINING is offered
  std::uint64_t max_message = 0;     // 0: limits::kMaxFetchMessage
  // The user's own size limit (`max_message_size` of `fetch --config`; 0:
  // none): a message LIST announces bigger stays on the server, is not
  // marked seen and is counted in FetchSummary::too_big, with a warning; it
  // is not a failure (unlike one above max_message).
  std::uint64_t max_message_size = 0;
  // Messages fetched per session (0: all): the first `fetch_limit` new ones
  // in maildrop order; the rest are counted in FetchSummary::deferred and
  // left for the next session. Messages stored by an earlier, cut session
  // are deleted whatever the limit.
  std::uint64_t fetch_limit = 0;
  // When set (by a signal handler's thread, e.g. SIGTERM of the daemon), no
  // further RETR is sent: the answers to those already sent are read and
  // stored, then the session DELEs what it stored and QUITs normally;
  // FetchSummary::stopped says so. Checked after each stored message and
  // before the first RETR. nullptr: never.
  const std::atomic<bool>* stop = nullptr;
  // What is kept of the STAT/LIST/UIDL listings (more messages or UIDL
  // octets than this: FetchStatus::protocol before anything is fetched).
  ListingLimits listing;
  // Protocol trace ("C: ..." / "S: ..."), secrets replaced by "<hidden>".
  std::function<void(std::string_view)> trace;
  // Called after each message (fetched or skipped) and once at the end.
  struct Progress {
    std::uint64_t done = 0, total = 0;  // messages to fetch this session
    std::uint64_t bytes = 0, total_bytes = 0;
  };
  std::function<void(const Progress&)> progress;
  // Warnings (bad challenge skipped in auto mode, accepted downgrade, ...).
  std::function<void(std::string_view)> warn;
};

struct FetchSummary {
  FetchStatus status = FetchStatus::ok;
  std::string error;  // empty on success
  std::string greeting;
  bool tls = false;
  std::string tls_protocol;
  std::string auth;  // mechanism used ("apop", "scram-sha-256", ...)
  Offer offer;
  std::uint64_t on_server = 0;     // messages in the maildrop
  std::uint64_t new_messages = 0;  // not yet stored (keep: not seen)
  std::uint64_t new_bytes = 0;     // their sizes as LIST announced them
  std::uint64_t stored = 0;
  std::uint64_t store_failed = 0;  // kept on the server
  std::uint64_t deleted = 0;       // DELE acknowledged and QUIT +OK
  std::uint64_t bytes = 0;         // decoded octets stored
  std::uint64_t too_big = 0;       // above max_message_size: left on the server
  std::uint64_t deferred = 0;      // new but beyond fetch_limit: for the next session
  bool stopped = false;            // FetchOptions::stop ended the fetching early
  std::vector<std::string> warnings;
  double seconds = 0;
};

// Runs one session on a connected transport (greeting not yet read; with
// implicit TLS the handshake is done). The state is updated and saved
// (a full save with the offer after login, which every append follows;
// record_seen after each store; retain_only and a full save at the end). Never throws; the summary
// says how it ended.
FetchSummary run_session(Transport& t, Destination& dest, AccountState& state,
                         const FetchOptions& opts);

// Maps a transport failure class to an exit status.
FetchStatus status_for(NetFailure f);

}  // namespace apop::client
