// Internal to `apop probe`'s analysis and rendering (probe_*.cpp); the API
// is client/probe.hpp.
//   probe_timestamps.cpp  the APOP timestamp entropy estimate
//   probe_analyze.cpp     the checks, the findings and the grade (analyze)
//   probe_render.cpp      the report as text and as JSON
#pragma once

#include <string>

namespace apop::client::probe::detail {

// Bits with one decimal ("12.3").
std::string fmt_bits(double b);

}  // namespace apop::client::probe::detail
