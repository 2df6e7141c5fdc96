// Must NOT compile: src/store may not include src/auth (docs/architecture.md,
// "Layers"). tests/CMakeLists.txt builds this file as a target linked like
// apop_store and expects the compiler to fail on the #include below.
#include "auth/credential_store.hpp"

int main() { return 0; }
