// Must NOT compile: src/pop3 may not include src/net (docs/architecture.md,
// "Layers"). tests/CMakeLists.txt builds this file as a target linked like
// apop_pop3 and expects the compiler to fail on the #include below.
#include "net/server.hpp"

int main() { return 0; }
