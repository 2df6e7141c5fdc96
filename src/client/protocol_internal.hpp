// Internal to the client protocol helpers (protocol.cpp, protocol_auth.cpp);
// the API is client/protocol.hpp.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "common/result.hpp"

namespace apop::client::protocol_detail {

// Errc::invalid with message m.
Error invalid(std::string m);

// A short printable rendering of untrusted bytes for error messages: bytes
// outside 0x20..0x7E as "\xNN", cut after `max` bytes ("...").
std::string printable(std::string_view s, std::size_t max = 80);

}  // namespace apop::client::protocol_detail
