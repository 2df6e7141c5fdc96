// Must NOT compile: src/ipc knows the login seam (pop3/interfaces.hpp) and
// nothing of src/store (docs/architecture.md, "Layers"). tests/CMakeLists.txt
// builds this file as a target linked like apop_ipc and expects the compiler
// to fail on the #include below.
#include "store/maildir.hpp"

int main() { return 0; }
