// The .fetchmailrc parser of `apop fetch import-config` on arbitrary bytes
// (checks: fuzz/fetch_import_check.hpp).
#include "fetch_import_check.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz_import::check(&apop::client::parse_fetchmailrc, data, size);
  return 0;
}
