// The fetch state file parser (client/account_state.hpp) on arbitrary file
// contents, and the state file naming (default_path) on arbitrary accounts.
// Input: byte 0 selects the part (even: file contents = the rest; odd: user
// '\n' host for default_path).
//
// Invariants (__builtin_trap): a file that loads is made only of the magic
// line, valid "uidl" lines and at most one "offer" line, and may end in an
// unterminated start of a "uidl" line (torn by a kill during an append);
// every complete UIDL in it is then seen(); saving and reloading gives the
// same state, and saving that again gives the same bytes (the written form
// is canonical); record_seen after the save appends lines that load again. default_path
// gives one file name component, never a dot file, at most 255 octets.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>

#include "client/account_state.hpp"
#include "store/maildir_name.hpp"

namespace {

namespace fs = std::filesystem;
using apop::client::AccountState;

const fs::path& dir() {
  static const fs::path d = [] {
    fs::path p = fs::temp_directory_path() / ("apop-fuzz-state-" + std::to_string(::getpid()));
    fs::create_directories(p);
    return p;
  }();
  return d;
}

std::string read(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

void file(std::string_view contents) {
  const fs::path p = dir() / "state";
  {
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f.write(contents.data(), static_cast<std::streamsize>(contents.size()));
    if (!f) __builtin_trap();
  }
  auto st = AccountState::load(p);
  if (!st) return;
  // What loaded: only known lines.
  std::size_t pos = 0, lineno = 0, offers = 0;
  while (pos < contents.size()) {
    const std::size_t nl = contents.find('\n', pos);
    if (nl == std::string_view::npos) {
      // Accepted unterminated: only the torn start of a "uidl" line after
      // the header.
      const std::string_view torn = contents.substr(pos);
      const bool prefix =
          torn.size() <= 5 ? std::string_view("uidl ").starts_with(torn)
                           : torn.starts_with("uidl ") && apop::store::valid_uidl(torn.substr(5));
      if (lineno == 0 || !prefix) __builtin_trap();
      break;
    }
    const std::string_view line = contents.substr(pos, nl - pos);
    pos = nl + 1;
    if (lineno++ == 0) {
      if (line != "apop-fetch-state 1") __builtin_trap();
    } else if (line.starts_with("uidl ")) {
      const std::string_view id = line.substr(5);
      if (!apop::store::valid_uidl(id) || !st->seen(id)) __builtin_trap();
    } else if (line.starts_with("offer ")) {
      ++offers;
    } else {
      __builtin_trap();
    }
  }
  if (lineno == 0 || offers > 1 || st->has_offer() != (offers == 1)) __builtin_trap();
  // Round trip: save, reload, save again.
  if (!st->save()) __builtin_trap();
  const std::string first = read(p);
  auto again = AccountState::load(p);
  if (!again) __builtin_trap();
  if (again->has_offer() != st->has_offer() || again->last_offer() != st->last_offer()) {
    __builtin_trap();
  }
  if (!again->save()) __builtin_trap();
  if (read(p) != first) __builtin_trap();
  // Appends: a new UIDL adds one line, a seen one nothing; the result loads.
  if (!again->record_seen("fuzz-appended") || !again->record_seen("fuzz-appended"))
    __builtin_trap();
  if (read(p) != first + (st->seen("fuzz-appended") ? "" : "uidl fuzz-appended\n"))
    __builtin_trap();
  auto appended = AccountState::load(p);
  if (!appended || !appended->seen("fuzz-appended")) __builtin_trap();
}

void naming(std::string_view in) {
  const std::size_t nl = in.find('\n');
  const std::string_view user = in.substr(0, nl);
  const std::string_view host =
      nl == std::string_view::npos ? std::string_view() : in.substr(nl + 1);
  const fs::path p = AccountState::default_path(user, host, 995);
  const std::string name = p.filename().string();
  if (name.empty() || name.front() == '.' || name.size() > 255) __builtin_trap();
  if (name.find('/') != std::string::npos || name.find('\0') != std::string::npos) __builtin_trap();
  if (p.parent_path().filename() != "apop") __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
  if ((data[0] & 1) == 0) {
    file(in);
  } else {
    naming(in);
  }
  return 0;
}
