// The network worker's pop3::Authenticator (issue 19): a proxy that sends
// each call to the auth process (ipc/auth_service.hpp) over one of a few
// connected SOCK_SEQPACKET channels and blocks the calling thread until the
// answer. The worker never holds a secret: it sends the client's proof (a
// digest, a password, a SASL response) and gets a verdict back.
//
// Every failure of the channel -- a timeout, end of file, an I/O error, a
// malformed or unexpected reply, the auth process's rate limit or refusal --
// becomes AuthResult{failure = AuthFailure::temporary} (the client gets
// -ERR [SYS/TEMP]), never a crash or an exception. A channel that failed
// (anything but a timeout) is closed and no longer used; a late reply after
// a timeout is recognised by its request id and skipped.
//
// Thread-safety: every method may be called from any thread at once; a call
// takes a free channel (waiting, within the timeout, while all are busy).
// The destructor must not run while calls are in flight, and a SaslSession
// it returned must not outlive it (its destructor may send sasl_end).
// A SaslSession is stepped by one thread at a time (as pop3::Session does).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/limits.hpp"
#include "common/posix_fd.hpp"
#include "common/result.hpp"
#include "ipc/wire.hpp"
#include "pop3/interfaces.hpp"

namespace apop::ipc {

class RemoteAuthenticator final : public pop3::Authenticator {
 public:
  // `channels`: connected SOCK_SEQPACKET sockets to the auth process (owned).
  // `timeout`: the longest a call waits for a free channel and the answer.
  // `mechanisms`: the auth process's SASL mechanisms; when not given, they
  // are fetched now (a `mechanisms` request; empty when that fails, see
  // fetch_mechanisms()).
  RemoteAuthenticator(std::vector<UniqueFd> channels,
                      std::chrono::milliseconds timeout = limits::kIpcReplyTimeout,
                      std::optional<std::vector<pop3::SaslMechanism>> mechanisms = std::nullopt);
  RemoteAuthenticator(const RemoteAuthenticator&) = delete;
  RemoteAuthenticator& operator=(const RemoteAuthenticator&) = delete;
  ~RemoteAuthenticator() override;

  pop3::AuthResult verify_apop(std::string_view user, std::string_view timestamp,
                               std::string_view digest, const pop3::AuthContext& ctx) override;
  pop3::AuthResult verify_plain(std::string_view user, std::string_view password,
                                const pop3::AuthContext& ctx) override;
  // Queued, not sent at once: the queue goes ahead of the next request on
  // whichever channel that takes (one send for both, and one wake-up of the
  // auth process), or, when no request comes, is sent by the flusher thread
  // within limits::kIpcRecordFlush. The auth process answers none. A failure
  // is ignored (best effort, as the interface says).
  // With a record sink (route_records()), the record goes there instead.
  void record_login(std::string_view user, std::int64_t when) override;
  // Login records go to `sink` (a worker's net::AuthChannel, which sends
  // them with its next batch) rather than the queue above. Before any call.
  using RecordSink = std::function<void(std::string_view user, std::int64_t when)>;
  void route_records(RecordSink sink) { record_sink_ = std::move(sink); }
  // Takes a free, live channel out of this authenticator's set for another
  // user (the worker's asynchronous channel); an empty descriptor when none
  // is free.
  UniqueFd take_channel();
  std::vector<pop3::SaslMechanism> sasl_mechanisms() const override;
  // nullptr for a mechanism not in sasl_mechanisms(). Nothing is sent until
  // the first step (sasl_start with the initial response); the exchange's
  // destructor sends sasl_end when the auth process may still hold it.
  std::unique_ptr<pop3::SaslSession> start_sasl(std::string_view mechanism,
                                                const pop3::AuthContext& ctx) override;

  // Asks the auth process for its mechanisms again and keeps them.
  Result<void> fetch_mechanisms();
  // Sends hello (protocol version, worker id) on every free channel: a
  // start-up check that the auth process speaks this version. A channel
  // that fails is dropped; an error when none is left.
  Result<void> hello(std::uint32_t worker_id);
  // After the auth process restarted: closes the old channels (calls in
  // flight on them fail as temporary) and uses these.
  void replace_channels(std::vector<UniqueFd> channels);
  // Channels in use or free (not closed after a failure).
  std::size_t live_channels() const;
  // Starts the thread that sends queued login records no request took
  // along. Call once, after the restrictions that bind only the threads a
  // process starts later (Landlock); without it records wait for the next
  // request. The destructor stops it and sends what is left.
  void start_flusher();
  // Sends the queued login records now.
  void flush_records();

  // One request and its reply: the reply, or an error (the channel's
  // failure, a timeout, an encoding error). For the SASL proxy and tests.
  // With `await_reply` false the request is only sent (Ack{} comes back at
  // once); its reply is skipped by the next call on the same channel.
  Result<Reply> call(const Request& request, bool await_reply = true);

 private:
  struct Channel;
  class Exchange;
  using Clock = std::chrono::steady_clock;

  // A free channel (waiting until `deadline`), or nullptr. With `records`,
  // the queued login records are taken too, under the same lock.
  Channel* acquire(Clock::time_point deadline, std::vector<std::string>* records = nullptr);
  void release(Channel* ch, bool broken);
  // Sends `ahead` (login records) and then `packet` in one sendmmsg, then
  // awaits the reply to `id` unless `await_reply` is false. An empty packet
  // sends only `ahead`.
  Result<Reply> exchange(Channel& ch, std::uint32_t id, const std::vector<std::string>& ahead,
                         std::string& packet, Clock::time_point deadline, bool& broken,
                         bool await_reply);
  std::vector<std::string> take_records();
  void flusher_loop();
  pop3::AuthResult verdict(Result<Reply> reply);

  const std::chrono::milliseconds timeout_;
  mutable std::mutex mu_;
  std::condition_variable freed_;
  std::vector<std::unique_ptr<Channel>> channels_;  // every live channel, free or in use
  std::vector<Channel*> free_;
  std::uint64_t generation_ = 0;
  std::vector<pop3::SaslMechanism> mechanisms_;
  std::atomic<std::uint32_t> next_id_{1};
  std::atomic<std::uint32_t> next_exchange_{1};
  // Encoded record_login packets waiting to go (under mu_).
  std::vector<std::string> records_;
  std::condition_variable records_queued_;  // wakes the flusher to stop
  bool stopping_ = false;
  std::thread flusher_;
  RecordSink record_sink_;  // set before use, then read-only
};

}  // namespace apop::ipc
