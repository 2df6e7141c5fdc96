// Must NOT compile: src/auth may not include src/store (docs/architecture.md,
// "Layers"). tests/CMakeLists.txt builds this file as a target linked like
// apop_auth and expects the compiler to fail on the #include below.
#include "store/memory.hpp"

int main() { return 0; }
