#include "auth/username.hpp"

#include "common/limits.hpp"

namespace apop::auth {
namespace {
bool is_alnum(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}
}  // namespace

bool is_valid_username(std::string_view name) {
  if (name.empty() || name.size() > limits::kMaxUsername) return false;
  if (!is_alnum(name.front())) return false;
  char prev = '\0';
  for (char c : name) {
    bool ok = is_alnum(c) || c == '.' || c == '_' || c == '+' || c == '@' || c == '-';
    if (!ok) return false;
    if (c == '.' && prev == '.') return false;
    prev = c;
  }
  return true;
}

}  // namespace apop::auth
