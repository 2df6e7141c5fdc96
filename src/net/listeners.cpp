// Listening sockets and TLS server contexts: parsing listen addresses,
// binding (for Server::bind, and for the master of a multi-process server,
// which binds before it forks the workers), loading the certificate.
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <spdlog/spdlog.h>

#include <asio.hpp>

#include "common/parse.hpp"
#include "net/listeners_internal.hpp"

namespace apop::net {

Result<ListenSpec> parse_listen(std::string_view text) {
  std::size_t colon = text.rfind(':');
  if (colon == std::string_view::npos || colon + 1 == text.size()) {
    return make_error(Errc::invalid, "listen address must be ADDR:PORT: " + std::string(text));
  }
  std::string_view host = text.substr(0, colon);
  std::string_view port = text.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  const auto p = parse_decimal<std::uint16_t>(port);
  if (!p) return make_error(Errc::invalid, "bad port in listen address: " + std::string(text));
  asio::error_code ec;
  asio::ip::make_address(std::string(host), ec);
  if (ec)
    return make_error(Errc::invalid, "bad IP address in listen address: " + std::string(text));
  return ListenSpec{std::string(host), *p};
}

bool is_loopback(std::string_view address) {
  asio::error_code ec;
  auto a = asio::ip::make_address(std::string(address), ec);
  if (ec) return false;
  if (a.is_v6() && a.to_v6().is_v4_mapped()) {
    return asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6()).is_loopback();
  }
  return a.is_loopback();
}

std::string endpoint_text(const tcp::endpoint& ep) {
  auto a = ep.address();
  if (a.is_v6()) return "[" + a.to_string() + "]:" + std::to_string(ep.port());
  return a.to_string() + ":" + std::to_string(ep.port());
}

std::string openssl_error() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

Result<TlsContext> make_tls_context(const TlsOptions& o) {
  auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
  SSL_CTX* native = ctx->native_handle();
  SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION);
  SSL_CTX_set_options(native, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                  SSL_OP_CIPHER_SERVER_PREFERENCE |
                                  // Decrypted records (a PASS line) are zeroed, not just freed.
                                  SSL_OP_CLEANSE_PLAINTEXT);
  if (SSL_CTX_use_certificate_chain_file(native, o.cert_file.c_str()) != 1) {
    return make_error(Errc::permanent,
                      "cannot load TLS certificate " + o.cert_file + ": " + openssl_error());
  }
  if (SSL_CTX_use_PrivateKey_file(native, o.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    return make_error(Errc::permanent,
                      "cannot load TLS key " + o.key_file + ": " + openssl_error());
  }
  if (SSL_CTX_check_private_key(native) != 1) {
    return make_error(Errc::permanent,
                      "TLS key " + o.key_file + " does not match certificate " + o.cert_file);
  }
  return ctx;
}

Result<tcp::acceptor> listen_on(asio::io_context& io, const ListenSpec& spec, bool reuse_port) {
  asio::error_code ec;
  tcp::endpoint ep(asio::ip::make_address(spec.address, ec), spec.port);
  if (ec) return make_error(Errc::invalid, "bad listen address " + spec.address);
  tcp::acceptor acc(io);
  acc.open(ep.protocol(), ec);
  if (!ec) acc.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec && reuse_port) {
    using reuse_port_option = asio::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>;
    acc.set_option(reuse_port_option(true), ec);
  }
  if (!ec && ep.address().is_v6()) acc.set_option(asio::ip::v6_only(true), ec);
  if (!ec) acc.bind(ep, ec);
  if (!ec) acc.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return make_error(Errc::temporary,
                      "cannot listen on " + endpoint_text(ep) + ": " + ec.message());
  }
  return acc;
}

Result<TlsContext> load_tls(const ServerOptions& options) {
  if (options.tls.enabled()) return make_tls_context(options.tls);
  if (!options.tls_listen.empty()) {
    return make_error(Errc::invalid, "TLS listeners need --tls-cert and --tls-key");
  }
  return TlsContext{};
}

Result<void> check_tls(const ServerOptions& options) {
  auto ctx = load_tls(options);
  if (!ctx) return ctx.error();
  return {};
}

void log_listening(const std::vector<BoundListener>& listeners) {
  for (const BoundListener& l : listeners) {
    spdlog::info("listening on {}{}", l.where, l.tls ? " (tls)" : "");
  }
}

Result<std::vector<std::vector<BoundListener>>> bind_listeners(const ServerOptions& options,
                                                               unsigned copies) {
  asio::io_context io{1};
  if (copies == 0) copies = 1;
  std::vector<std::vector<BoundListener>> out(copies);
  auto bind_one = [&](ListenSpec spec, bool tls) -> Result<void> {
    for (unsigned c = 0; c < copies; ++c) {
      auto acc = listen_on(io, spec, copies > 1);
      if (!acc) return acc.error();
      const std::string where = endpoint_text(acc->local_endpoint());
      if (c == 0) spec.port = acc->local_endpoint().port();  // the other copies share it
      asio::error_code ec;
      acc->non_blocking(true, ec);
      const int fd = acc->release(ec);
      if (ec) return make_error(Errc::temporary, "listener " + where + ": " + ec.message());
      out[c].push_back(BoundListener{UniqueFd(fd), tls, where});
    }
    return {};
  };
  for (const ListenSpec& spec : options.listen) {
    if (auto r = bind_one(spec, false); !r) return r.error();
  }
  for (const ListenSpec& spec : options.tls_listen) {
    if (auto r = bind_one(spec, true); !r) return r.error();
  }
  return out;
}

}  // namespace apop::net
