// An in-process, fault-injecting byte stream for the session driver
// (net/session_driver.hpp), in the spirit of Beast's test::stream: the test
// plays the client from the other end, on the same io_context, with no
// sockets. Faults: a client that stops reading (backpressure; the driver's
// write stalls), a peer that vanishes (after N more octets of output, or at
// once), a half-close, a handshake that fails, small reads (trickling).
//
// STLS/implicit TLS: handshake() succeeds (the stream then reports
// secure()) unless fail_handshake() armed an error; client bytes already
// waiting when the handshake starts are plaintext where a ClientHello
// should be, so the handshake fails then, as OpenSSL's would.
#pragma once

#include <algorithm>
#include <asio.hpp>
#include <chrono>
#include <cstddef>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>

#include "net/session_driver.hpp"

namespace apop::net::test {

class TestStream {
 public:
  static constexpr std::size_t kUnlimited = std::numeric_limits<std::size_t>::max();

  explicit TestStream(const asio::any_io_executor& ex) : wake_(ex) {
    wake_.expires_at(std::chrono::steady_clock::time_point::max());
  }

  // ---- the client's side -------------------------------------------------
  void push(std::string_view bytes) {
    in_ += bytes;
    notify();
  }
  void close_input() {  // the client half-closes: reads see EOF once drained
    eof_ = true;
    notify();
  }
  void vanish() {  // the peer is gone: reads and writes fail (connection reset)
    gone_ = true;
    notify();
  }
  // The peer vanishes once `n` more octets of output reached it.
  void vanish_after(std::size_t n) { vanish_budget_ = n; }
  // Backpressure: the client accepts `n` more octets of output, then stops
  // reading (0: stops now); kUnlimited: reads everything.
  void set_read_window(std::size_t n) {
    window_ = n;
    notify();
  }
  void fail_handshake(std::error_code ec) { handshake_error_ = ec; }
  // Each read hands the driver at most this many octets.
  void set_read_chunk(std::size_t n) { read_chunk_ = n; }

  const std::string& output() const { return out_; }
  std::string take_output() { return std::exchange(out_, std::string()); }
  bool gone() const { return gone_; }
  int handshakes() const { return handshakes_; }
  std::size_t cancels() const { return cancels_; }

  // ---- the driver's side (SessionStream) ---------------------------------
  template <typename Sink>
  asio::awaitable<asio::error_code> read_into(Sink&& sink) {
    for (;;) {
      if (gone_) co_return asio::error::connection_reset;
      if (!in_.empty()) {
        const std::size_t n = std::min(in_.size(), read_chunk_);
        const std::string chunk = in_.substr(0, n);
        in_.erase(0, n);
        sink(std::string_view(chunk));
        co_return asio::error_code{};
      }
      if (eof_) co_return asio::error::eof;
      if (auto ec = co_await wait()) co_return ec;
    }
  }

  asio::awaitable<std::tuple<asio::error_code, std::size_t>> write(asio::const_buffer b) {
    const char* p = static_cast<const char*>(b.data());
    std::size_t done = 0;
    while (done < b.size()) {
      if (gone_) co_return std::tuple{asio::error_code(asio::error::broken_pipe), done};
      std::size_t n = std::min(b.size() - done, window_);
      if (vanish_budget_ != kUnlimited) n = std::min(n, vanish_budget_);
      if (n == 0) {
        if (auto ec = co_await wait()) co_return std::tuple{ec, done};
        continue;
      }
      accept(std::string_view(p + done, n));
      done += n;
    }
    co_return std::tuple{asio::error_code{}, done};
  }

  asio::awaitable<asio::error_code> handshake(const TlsContext&) {
    ++handshakes_;
    if (handshake_error_)
      co_return asio::error_code(handshake_error_.value(), handshake_error_.category());
    if (!in_.empty())
      co_return asio::error_code(asio::error::invalid_argument);  // not a ClientHello
    secure_ = true;
    co_return asio::error_code{};
  }

  bool secure() const { return secure_; }

  // Aborts the pending operation (operation_aborted), as socket::cancel.
  void cancel() {
    ++cancels_;
    wake_.cancel();
  }

  void write_now(std::string_view text) {
    if (gone_) return;
    std::size_t n = std::min(text.size(), window_);
    if (vanish_budget_ != kUnlimited) n = std::min(n, vanish_budget_);
    accept(text.substr(0, n));
  }

 private:
  void accept(std::string_view bytes) {
    out_ += bytes;
    if (window_ != kUnlimited) window_ -= bytes.size();
    if (vanish_budget_ != kUnlimited) {
      vanish_budget_ -= bytes.size();
      if (vanish_budget_ == 0) gone_ = true;
    }
  }
  void notify() { wake_.cancel(); }
  // Waits until the client side changes something (ok) or cancel() (operation_aborted).
  asio::awaitable<asio::error_code> wait() {
    const std::size_t gen = cancels_;
    co_await wake_.async_wait(use_tuple);
    if (cancels_ != gen) co_return asio::error_code(asio::error::operation_aborted);
    co_return asio::error_code{};
  }

  asio::steady_timer wake_;
  std::string in_, out_;
  bool eof_ = false;
  bool gone_ = false;
  bool secure_ = false;
  std::size_t window_ = kUnlimited;
  std::size_t vanish_budget_ = kUnlimited;
  std::size_t read_chunk_ = 16 * 1024;
  std::error_code handshake_error_;
  int handshakes_ = 0;
  std::size_t cancels_ = 0;
};

static_assert(SessionStream<TestStream>);

}  // namespace apop::net::test
