// Wiping memory that held a secret (a password, a digest, a SASL response)
// before it is reused or freed: explicit_bzero (glibc), which the compiler
// may not remove as a dead store.
#pragma once

#include <string.h>

#include <cstddef>
#include <string>

namespace apop {

inline void wipe(void* p, std::size_t n) {
  if (n > 0) ::explicit_bzero(p, n);
}

// Zeroes every byte the string owns (its whole capacity, not just its
// size), then empties it.
inline void wipe(std::string& s) {
  s.resize(s.capacity());
  wipe(s.data(), s.size());
  s.clear();
}

}  // namespace apop
