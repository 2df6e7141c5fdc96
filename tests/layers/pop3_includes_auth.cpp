// Must NOT compile: src/pop3 may not include src/auth (docs/architecture.md,
// "Layers"). tests/CMakeLists.txt builds this file as a target linked like
// apop_pop3 and expects the compiler to fail on the #include below.
#include "auth/authenticator.hpp"

int main() { return 0; }
