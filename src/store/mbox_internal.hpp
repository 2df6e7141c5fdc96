// Internal to the mbox implementation (mbox_*.cpp): helpers that more than one
// of its files needs. Not part of the store's API (that is store/mbox.hpp).
//
// The files, one job each:
//   mbox_parse.cpp     splitting a buffer into messages, header fields, UIDLs
//   mbox_lock.cpp      the dotlock and fcntl lock (MboxLock)
//   mbox_maildrop.cpp  serving a snapshot and rewriting at QUIT (MboxDrop)
//   mbox_inplace.cpp   the in-place rewrite, its journal and crash recovery
//   mbox_deliver.cpp   appending one message (mbox_deliver)
//   mbox_internal.cpp  the helpers below
#pragma once

#include <openssl/evp.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"
#include "store/dir_io.hpp"
#include "store/mbox.hpp"

namespace apop::store::mbox_detail {

// sys_error and fsync_retry: store/dir_io.hpp.
using store::fsync_retry;
using store::sys_error;

// pread, retried on EINTR.
ssize_t pread_retry(int fd, char* buf, std::size_t n, off_t off);

// Exactly n bytes at off (Errc::temporary on errors and on a short file);
// all of data at off. `label` names the file in error messages.
Result<void> pread_exact(int fd, char* buf, std::size_t n, std::uint64_t off,
                         const std::string& label);
Result<void> pwrite_all(int fd, std::string_view data, std::uint64_t off, const std::string& label);

// Incremental SHA-1 (libcrypto's default provider always has it).
class Sha1 {
 public:
  Sha1();
  ~Sha1();
  Sha1(const Sha1&) = delete;
  Sha1& operator=(const Sha1&) = delete;
  void update(std::string_view s);
  // 40 lower-case hex digits.
  std::string hex();

 private:
  EVP_MD_CTX* ctx_;
};

std::string sha1_hex(std::string_view s);

// Whether fd is (still) the file at `path`.
bool same_file(int fd, const std::filesystem::path& path);

// FILE's directory ("." for a bare name).
std::filesystem::path dir_of(const std::filesystem::path& file);

// A name for per-file state in a server directory: a hash of the absolute
// path (32 hex digits).
std::string path_key(const std::filesystem::path& file);

// fsyncs the directory that holds `path`.
Result<void> fsync_dir_of(const std::filesystem::path& path);

// Sets FILE's atime and mtime back to those of `st` (mail readers tell new
// mail by mtime > atime). Needs ownership (or root): skipped otherwise.
void keep_times(int fd, const struct stat& st);

// mbox_inplace.cpp, for the maildrop.

// Whether a journal of `file` may be waiting (cheap: lstat only).
bool journal_present(const std::filesystem::path& file, const MboxOptions& opts);

// The in-place rewrite (see MboxJournal in mbox.hpp): under both locks, fd
// open read-write; `data` is FILE as read under them, `drop` marks the spans
// to delete, `st` is FILE's stat before the rewrite (times to keep).
Result<void> rewrite_mbox_in_place(const std::filesystem::path& file, int fd, std::string_view data,
                                   const std::vector<MboxSpan>& spans,
                                   const std::vector<bool>& drop, const struct stat& st,
                                   const MboxOptions& opts);

}  // namespace apop::store::mbox_detail
