// Internal to the Maildir maildrop (maildir.cpp: the session, tmp/ and new/;
// maildir_listing.cpp: the listing of cur/ and its cache). Not part of the
// store's API (store/maildir.hpp).
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"
#include "pop3/interfaces.hpp"
#include "store/maildir_cache.hpp"

namespace apop::store::maildir_detail {

// The names are views: into the listing's strings, the cache file's bytes or
// a renamed name, all owned by the maildrop (Listing/MaildirDrop storage) and
// never moved; one allocation per message less on a big login.
struct Entry {
  std::string_view name;  // file name in cur/ as last seen (not NUL-terminated)
  // Length of the base name (the part before ':'; a rename by another client
  // changes the flags only, so the base stays a prefix of name).
  std::size_t base_len = 0;
  std::string_view base() const { return name.substr(0, base_len); }
  std::string path() const { return std::string(name); }  // for the *at() calls
};

// What the open of a maildrop found, and what a later cache write needs.
struct Listing {
  std::vector<Entry> entries;
  std::vector<pop3::MessageInfo> infos;
  // The UIDLs are the ones a fresh listing of any subset would give (no
  // duplicate needed a hash-derived UIDL) and nothing was cut at
  // kMaxMessages: a cache written after UPDATE may hold the survivors.
  bool subset_stable = false;
  // The key of apop-uidl at the open (StatKey{} when absent); known = false
  // when it could not be stat()ed (then no cache is read or written).
  StatKey map_key;
  bool map_known = false;
  // What the entries' names point into.
  std::vector<std::string> name_store;
  std::string cache_store;
};

// Writes the cache of entries[i] for the indexes in `keep` (all when
// empty), streamed: no copy of the list or of the file is made.
Result<void> write_listing(int dirfd, const StatKey& cur, const StatKey& map, bool clean,
                           const std::vector<Entry>& entries,
                           const std::vector<pop3::MessageInfo>& infos,
                           const std::vector<std::size_t>& keep = {});

// Which of apop's own files the Maildir root holds, from one listing of it
// (two getdents calls instead of a failed open or stat per file).
// `known` false: the listing failed, so each file is looked for.
struct RootFiles {
  bool known = false;
  bool journal = false;   // kUpdateJournalFile or kUpdateJournalTmp
  bool uidl_map = false;  // kUidlMapFile
  bool cache = false;     // kMaildirCacheFile
  bool maybe(bool seen) const { return !known || seen; }
};

RootFiles list_root(int dirfd);

// The listing of cur/ for a session: from the cache MAILDIR/apop-cache when
// it is valid for cur/ as it is now, else from the directory (then the cache
// is rewritten for big maildrops). See store/maildir_cache.hpp for the rules.
// `root` says which of the cache and the UIDL map may exist.
Result<Listing> list_maildrop(int dirfd, int curfd, const std::filesystem::path& dir,
                              const RootFiles& root);

}  // namespace apop::store::maildir_detail
