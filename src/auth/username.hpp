// User name rules. User names become directory names under DATA/mail/, so
// they are short and restricted: 1..limits::kMaxUsername characters from
// [A-Za-z0-9._+@-], the first alphanumeric (so never "." / ".." / a leading
// dot or dash), no "..", and never '/'. Pure; thread-safe.
#pragma once

#include <string_view>

namespace apop::auth {

bool is_valid_username(std::string_view name);

}  // namespace apop::auth
