// Shared by server.cpp and listeners.cpp (not part of net's interface).
#pragma once

#include <asio.hpp>
#include <string>

#include "common/result.hpp"
#include "net/server.hpp"
#include "net/session_driver.hpp"

namespace apop::net {

using asio::ip::tcp;

// "ADDR:PORT", "[V6ADDR]:PORT".
std::string endpoint_text(const tcp::endpoint& ep);
// TLS 1.2 at least, OpenSSL's default (modern) cipher lists, no
// renegotiation, no compression, decrypted records zeroed.
Result<TlsContext> make_tls_context(const TlsOptions& o);
// The certificate of `options`, or an empty context when it has none
// (Errc::invalid when TLS listeners need one).
Result<TlsContext> load_tls(const ServerOptions& options);
// A bound, listening acceptor for `spec` (SO_REUSEADDR; SO_REUSEPORT when
// asked; IPv6 only on an IPv6 address).
Result<tcp::acceptor> listen_on(asio::io_context& io, const ListenSpec& spec,
                                bool reuse_port = false);

}  // namespace apop::net
