// Implemented by the transport work (TCP + TLS over Asio/OpenSSL).
#include "client/transport.hpp"
