// Blocking POP3 client transport: TCP with optional TLS (implicit or STLS),
// used by `apop fetch` and `apop probe`. The protocol logic stays in the
// I/O-free helpers of src/client; this is only bytes and lines.
//
// Contract: a Transport is used by one thread. Every call honours the timeout
// given at connect(); a timeout, EOF or TLS failure is an Error value, never an
// exception. read_line() never returns more than `max` octets and reports an
// overlong line as Errc::invalid (the fetchmail overflow class, CVE-2005-2335).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/result.hpp"

namespace apop::client {

struct TlsOptions {
  std::string server_name;  // SNI and hostname check; defaults to the host
  std::string ca_file;      // empty: the system store
  bool insecure = false;    // skip certificate and hostname verification
};

// What a finished TLS handshake looked like (probe reports it; fetch logs it).
struct TlsInfo {
  bool active = false;
  std::string protocol;  // "TLSv1.3"
  std::string cipher;
  bool verified = false;        // chain verified against the CA store
  bool hostname_match = false;  // certificate names server_name
  std::string verify_error;     // X509 verify message when !verified
  std::string subject;
  std::string issuer;
  std::int64_t not_after = 0;  // UNIX seconds
};

// Why a transport operation failed: fetch maps these to exit codes.
enum class NetFailure {
  none,
  resolve,
  connect,
  timeout,
  closed,
  io,
  tls_handshake,
  tls_verify,
  overlong
};

class Transport {
 public:
  virtual ~Transport() = default;
  // Writes all of `data`.
  virtual Result<void> write(std::string_view data) = 0;
  // One line without its CRLF (a bare LF ending is accepted). An overlong line
  // is an error and the connection is unusable afterwards.
  virtual Result<std::string> read_line(std::size_t max) = 0;
  // Octets received but not yet consumed by read_line(): non-zero right after
  // "+OK" to STLS means the server injected data (abort the session).
  virtual std::size_t buffered() const = 0;
  // Upgrades the connection (STLS). Fails with Errc::invalid (and
  // NetFailure::tls_handshake) when plaintext octets are buffered or already
  // waiting on the socket before the ClientHello: STLS response injection.
  // Certificate/hostname failures are NetFailure::tls_verify unless
  // opts.insecure; tls() is filled in either case once the handshake ran.
  virtual Result<void> start_tls(const TlsOptions& opts) = 0;
  virtual const TlsInfo& tls() const = 0;
  // The failure class of the last error returned (none after success).
  virtual NetFailure last_failure() const = 0;
};

struct ConnectOptions {
  std::string host;
  std::uint16_t port = 110;
  bool implicit_tls = false;  // pop3s
  TlsOptions tls;
  std::chrono::seconds timeout{60};
  // When set and true (the daemon's SIGTERM), every wait on the server --
  // the connect too -- ends after at most limits::kFetchStopGrace of
  // silence from then on, instead of `timeout`. Borrowed: it must outlive
  // the transport.
  const std::atomic<bool>* stop = nullptr;
};

// Resolves, connects (each address in turn, within opts.timeout overall) and,
// for implicit TLS, completes the handshake. Sets SIGPIPE to SIG_IGN for the
// process on first use (OpenSSL writes with write(2)).
Result<std::unique_ptr<Transport>> connect(const ConnectOptions& opts);
// The same; on failure *failure says why (resolve, connect, timeout,
// tls_handshake, tls_verify), for exit codes. `failure` must not be null.
Result<std::unique_ptr<Transport>> connect(const ConnectOptions& opts, NetFailure* failure);

// Whether the certificate `cert` (an X509*, passed as void* to keep OpenSSL
// out of this header) names `host`: an IP literal against iPAddress entries,
// a name with X509_check_host and X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS (a
// wildcard must be the whole left-most label, RFC 6125 §7.2: "f*.example.com"
// does not name foo.example.com; "*.example.com" does).
bool certificate_names_host(const void* cert, const std::string& host);
// The same for a certificate in PEM (tests); false when it does not parse.
bool pem_certificate_names_host(std::string_view pem, const std::string& host);

}  // namespace apop::client
