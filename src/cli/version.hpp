// The version of the `apop` binary: CMake's project(apop VERSION ...), passed
// to the apop target as APOP_VERSION. Shown by `apop --version` and in the
// server's IMPLEMENTATION capability (RFC 2449 §6.9).
#pragma once

#include <string_view>

#ifndef APOP_VERSION
#error "APOP_VERSION is defined by CMakeLists.txt (target apop)"
#endif

namespace apop::cli {

// "apop 0.1.0".
inline constexpr std::string_view kVersionString = "apop " APOP_VERSION;

}  // namespace apop::cli
