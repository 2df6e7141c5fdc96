// The in-place rewrite of an mbox file, its journal and crash recovery
// (store/mbox.hpp, "In-place rewrite journal"; docs/migration.md, "mbox").
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <utility>

#include "common/parse.hpp"
#include "store/mbox.hpp"
#include "store/mbox_internal.hpp"

namespace apop::store {

namespace fs = std::filesystem;
using namespace mbox_detail;

namespace {

constexpr std::string_view kJournalMagic = "APOP-MBOX-JOURNAL 1\n";

std::string journal_header(const MboxJournal& j) {
  std::string h(kJournalMagic);
  h += "dev " + std::to_string(j.dev) + "\n";
  h += "ino " + std::to_string(j.ino) + "\n";
  h += "size " + std::to_string(j.size) + "\n";
  h += "offset " + std::to_string(j.offset) + "\n";
  h += "new-size " + std::to_string(j.new_size) + "\n";
  std::string path = j.path;
  std::replace(path.begin(), path.end(), '\n', '?');
  h += "path " + path + "\n\n";
  return h;
}

bool parse_u64(std::string_view s, std::uint64_t& out) {
  const auto v = parse_decimal(s, {.max_digits = 20});
  if (v) out = *v;
  return v.has_value();
}

}  // namespace

std::string encode_mbox_journal(const MboxJournal& j) {
  std::string out = journal_header(j);
  out += j.region;
  out += sha1_hex(out) + "\n";
  return out;
}

namespace {

// Parses the journal header at the start of `data` (which may hold more);
// returns the header's length.
Result<std::size_t> parse_journal_header(std::string_view data, MboxJournal& j) {
  auto bad = [](const std::string& why) {
    return make_error(Errc::invalid, "mbox journal: " + why);
  };
  if (!data.starts_with(kJournalMagic)) return bad("no header");
  std::size_t pos = kJournalMagic.size();
  const std::array<std::pair<std::string_view, std::uint64_t*>, 5> fields = {{
      {"dev ", &j.dev},
      {"ino ", &j.ino},
      {"size ", &j.size},
      {"offset ", &j.offset},
      {"new-size ", &j.new_size},
  }};
  for (const auto& [name, dest] : fields) {
    const std::size_t nl = data.find('\n', pos);
    if (nl == std::string_view::npos) return bad("truncated header");
    const std::string_view line = data.substr(pos, nl - pos);
    if (!line.starts_with(name) || !parse_u64(line.substr(name.size()), *dest)) {
      return bad("bad header line");
    }
    pos = nl + 1;
  }
  if (data.substr(pos, 5) != "path ") return bad("bad header line");
  const std::size_t end = data.find("\n\n", pos);
  if (end == std::string_view::npos) return bad("truncated header");
  j.path = std::string(data.substr(pos + 5, end - pos - 5));
  if (j.offset > j.new_size || j.new_size >= j.size) return bad("inconsistent sizes");
  return end + 2;
}

}  // namespace

Result<MboxJournal> decode_mbox_journal(std::string_view data) {
  auto bad = [](const std::string& why) {
    return make_error(Errc::invalid, "mbox journal: " + why);
  };
  if (!data.starts_with(kJournalMagic)) return bad("no header");
  if (data.size() < kJournalMagic.size() + 41 || data.back() != '\n') return bad("incomplete");
  const std::string_view body = data.substr(0, data.size() - 41);
  if (sha1_hex(body) != data.substr(data.size() - 41, 40)) return bad("checksum mismatch");
  MboxJournal j;
  auto header_len = parse_journal_header(body, j);
  if (!header_len) return header_len.error();
  if (body.size() - *header_len != j.size - j.offset) return bad("region length mismatch");
  j.region = std::string(body.substr(*header_len));
  return j;
}

std::vector<fs::path> mbox_journal_paths(const fs::path& file, const MboxOptions& opts) {
  std::vector<fs::path> out{dir_of(file) / ("." + file.filename().string() + ".apop-journal")};
  if (!opts.journal_dir.empty()) {
    out.push_back(opts.journal_dir / ("mbox-" + path_key(file) + ".journal"));
  }
  return out;
}

namespace {

// Removes a journal and makes that durable.
Result<void> remove_journal(const fs::path& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return sys_error("remove " + path.string(), errno);
  }
  return fsync_dir_of(path);
}

// The journal at `path` when it is ours to act on: a regular file owned by
// our effective user (anyone may create files in a 1777 /var/mail).
Result<std::optional<std::pair<UniqueFd, std::uint64_t>>> open_own_journal(const fs::path& path) {
  using Opened = std::optional<std::pair<UniqueFd, std::uint64_t>>;
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
  if (!fd) {
    if (errno == ENOENT || errno == ELOOP || errno == EACCES) return Opened{};
    return sys_error("open " + path.string(), errno);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return sys_error("stat " + path.string(), errno);
  if (!S_ISREG(st.st_mode) || st.st_uid != ::geteuid() || st.st_nlink != 1) {
    return Opened{};  // not ours: never trusted, never removed
  }
  return Opened{std::make_pair(std::move(fd), static_cast<std::uint64_t>(st.st_size))};
}

// Checks a journal file without reading it whole into memory (it holds up
// to the whole mbox): header, length and checksum. Returns the header length.
Result<std::size_t> check_journal(int jf, std::uint64_t jsize, MboxJournal& j,
                                  const std::string& label) {
  constexpr std::size_t kTrailer = 41;  // 40 hex digits and LF
  std::string head(static_cast<std::size_t>(std::min<std::uint64_t>(jsize, 16384)), '\0');
  const ssize_t got = pread_retry(jf, head.data(), head.size(), 0);
  if (got < 0) return sys_error("read " + label, errno);
  head.resize(static_cast<std::size_t>(got));
  auto header_len = parse_journal_header(head, j);
  if (!header_len) return header_len.error();
  if (jsize < kTrailer || jsize - kTrailer != *header_len + (j.size - j.offset)) {
    return make_error(Errc::invalid, "mbox journal: incomplete");
  }
  Sha1 sum;
  std::vector<char> buf(limits::kBodyChunk);
  for (std::uint64_t pos = 0; pos < jsize - kTrailer;) {
    const auto n =
        static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), jsize - kTrailer - pos));
    if (auto r = pread_exact(jf, buf.data(), n, pos, label); !r) return r.error();
    sum.update(std::string_view(buf.data(), n));
    pos += n;
  }
  char trailer[kTrailer];
  if (auto r = pread_exact(jf, trailer, kTrailer, jsize - kTrailer, label); !r) return r.error();
  if (std::string_view(trailer, kTrailer) != sum.hex() + "\n") {
    return make_error(Errc::invalid, "mbox journal: checksum mismatch");
  }
  return header_len;
}

}  // namespace

Result<bool> recover_mbox(const fs::path& file, int fd, const MboxOptions& opts) {
  bool found = false;
  for (const fs::path& path : mbox_journal_paths(file, opts)) {
    auto opened = open_own_journal(path);
    if (!opened) return opened.error();
    if (!*opened) continue;
    found = true;
    const int jf = (*opened)->first.get();
    MboxJournal j;
    auto header_len = check_journal(jf, (*opened)->second, j, path.string());
    if (!header_len && header_len.error().code != Errc::invalid) return header_len.error();
    struct stat st {};
    if (::fstat(fd, &st) != 0) return sys_error("stat " + file.string(), errno);
    if (!header_len || j.dev != static_cast<std::uint64_t>(st.st_dev) ||
        j.ino != static_cast<std::uint64_t>(st.st_ino)) {
      // Incomplete (the rewrite died writing it: FILE untouched), damaged, or
      // of a file that is no longer there.
      if (auto r = remove_journal(path); !r) return r.error();
      continue;
    }
    const auto size = static_cast<std::uint64_t>(st.st_size);
    char mark = 1;
    if (size > j.new_size) {
      const ssize_t n = pread_retry(fd, &mark, 1, static_cast<off_t>(j.new_size));
      if (n != 1) return sys_error("read " + file.string(), n < 0 ? errno : EIO);
    }
    if (size == j.new_size || (size > j.new_size && mark != '\0')) {
      // Truncated: FILE is the new state (plus mail appended since).
      if (auto r = remove_journal(path); !r) return r.error();
      continue;
    }
    if (size < j.size) {
      return make_error(Errc::temporary, file.string() + " does not match the rewrite journal " +
                                             path.string() + " (size " + std::to_string(size) +
                                             ", expected at least " + std::to_string(j.size) +
                                             "): left for the administrator (docs/migration.md)");
    }
    // Not truncated: put the original bytes back; [size, now) is mail
    // appended since and stays.
    std::vector<char> buf(limits::kBodyChunk);
    for (std::uint64_t pos = 0; pos < j.size - j.offset;) {
      const auto n =
          static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), j.size - j.offset - pos));
      if (auto r = pread_exact(jf, buf.data(), n, *header_len + pos, path.string()); !r) {
        return r.error();
      }
      if (auto r = pwrite_all(fd, std::string_view(buf.data(), n), j.offset + pos, file.string());
          !r) {
        return r.error();
      }
      pos += n;
    }
    if (fsync_retry(fd) != 0) return sys_error("fsync " + file.string(), errno);
    if (auto r = remove_journal(path); !r) return r.error();
  }
  return found;
}

bool mbox_detail::journal_present(const fs::path& file, const MboxOptions& opts) {
  for (const fs::path& p : mbox_journal_paths(file, opts)) {
    struct stat st {};
    if (::lstat(p.c_str(), &st) == 0) return true;
  }
  return false;
}

namespace {

// Creates the journal file: next to FILE when its directory lets us (and no
// foreign file has that name), else in opts.journal_dir.
Result<std::pair<UniqueFd, fs::path>> create_journal(const fs::path& file,
                                                     const MboxOptions& opts) {
  const std::vector<fs::path> paths = mbox_journal_paths(file, opts);
  for (std::size_t i = 0; i < paths.size(); ++i) {
    if (i == 1 && ::mkdir(opts.journal_dir.c_str(), 0700) != 0 && errno != EEXIST) {
      return sys_error("mkdir " + opts.journal_dir.string(), errno);
    }
    UniqueFd fd(::open(paths[i].c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (fd) return std::make_pair(std::move(fd), paths[i]);
    const int err = errno;
    // recover_mbox ran under the same locks: an existing file is not ours.
    if (i + 1 < paths.size() && (err == EACCES || err == EPERM || err == EROFS || err == EEXIST)) {
      continue;
    }
    return sys_error("create the rewrite journal " + paths[i].string(), err);
  }
  return make_error(Errc::temporary, "no place for the rewrite journal of " + file.string());
}

}  // namespace

Result<void> mbox_detail::rewrite_mbox_in_place(const fs::path& file, int fd, std::string_view data,
                                                const std::vector<MboxSpan>& spans,
                                                const std::vector<bool>& drop,
                                                const struct stat& st, const MboxOptions& opts) {
  auto fault = [&](std::string_view stage) { return opts.fail_at && opts.fail_at(stage); };
  const auto first =
      static_cast<std::size_t>(std::find(drop.begin(), drop.end(), true) - drop.begin());
  if (first >= spans.size()) return {};
  struct Seg {
    std::uint64_t src, len;
  };
  std::vector<Seg> keep;
  const std::uint64_t offset = spans[first].start;
  std::uint64_t new_size = offset;
  for (std::size_t k = first; k < spans.size(); ++k) {
    if (drop[k]) continue;
    keep.push_back({spans[k].start, spans[k].next - spans[k].start});
    new_size += spans[k].next - spans[k].start;
  }
  // Mail every MTA appends takes our locks, so the file cannot have grown;
  // should a writer that ignores locks have appended anyway, keep that too.
  struct stat now {};
  if (::fstat(fd, &now) != 0) return sys_error("stat " + file.string(), errno);
  const auto size = static_cast<std::uint64_t>(now.st_size);
  if (size < data.size()) return make_error(Errc::temporary, file.string() + " shrank");
  if (size > data.size()) {
    keep.push_back({data.size(), size - data.size()});
    new_size += size - data.size();
  }

  // 1. The journal: the original bytes of [offset, size).
  auto created = create_journal(file, opts);
  if (!created) return created.error();
  // Named references, not a structured binding: clang 14 cannot capture a
  // structured binding in a lambda (abandon below).
  auto& jfd = created->first;
  auto& jpath = created->second;
  MboxJournal head;
  head.dev = static_cast<std::uint64_t>(now.st_dev);
  head.ino = static_cast<std::uint64_t>(now.st_ino);
  head.size = size;
  head.offset = offset;
  head.new_size = new_size;
  head.path = file.string();
  std::vector<char> buf(limits::kBodyChunk);
  std::uint64_t header_len = 0;
  {
    auto abandon = [&](Error e) {
      ::unlink(jpath.c_str());
      e.message += " (nothing deleted)";
      return e;
    };
    const std::string header = journal_header(head);
    header_len = header.size();
    Sha1 sum;
    sum.update(header);
    if (!write_all(jfd.get(), header)) return abandon(sys_error("write " + jpath.string(), errno));
    if (fault("journal-partial")) return make_error(Errc::temporary, "injected fault: journal");
    for (std::uint64_t pos = offset; pos < size;) {
      const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), size - pos));
      if (auto r = pread_exact(fd, buf.data(), n, pos, file.string()); !r) {
        return abandon(r.error());
      }
      const std::string_view chunk(buf.data(), n);
      sum.update(chunk);
      if (!write_all(jfd.get(), chunk)) {
        return abandon(sys_error("write " + jpath.string(), errno));
      }
      pos += n;
    }
    if (!write_all(jfd.get(), sum.hex() + "\n")) {
      return abandon(sys_error("write " + jpath.string(), errno));
    }
    if (fsync_retry(jfd.get()) != 0) return abandon(sys_error("fsync " + jpath.string(), errno));
    if (auto r = fsync_dir_of(jpath); !r) return abandon(r.error());
  }
  if (fault("journal")) return make_error(Errc::temporary, "injected fault: journal");

  // From here on, a failure undoes what was done (the journal stays for the
  // next login when even that fails).
  auto undo = [&](Error e) {
    if (auto r = recover_mbox(file, fd, opts); !r) {
      e.message += "; undoing failed too (" + r.error().message + "), the next login finishes it";
    } else {
      e.message += " (nothing deleted)";
    }
    return e;
  };
  // 2. The mark: a NUL at new_size until the truncation.
  if (auto r = pwrite_all(fd, std::string_view("\0", 1), new_size, file.string()); !r) {
    return undo(r.error());
  }
  if (fsync_retry(fd) != 0) return undo(sys_error("fsync " + file.string(), errno));
  // 3. The kept messages down, read from the journal (the mark, and the
  // moves themselves, overwrite parts of the file that are still to move).
  std::uint64_t dst = offset;
  bool first_chunk = true;
  for (const Seg& seg : keep) {
    for (std::uint64_t done = 0; done < seg.len;) {
      const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), seg.len - done));
      if (auto r = pread_exact(jfd.get(), buf.data(), n, header_len + seg.src + done - offset,
                               jpath.string());
          !r) {
        return undo(r.error());
      }
      if (auto r = pwrite_all(fd, std::string_view(buf.data(), n), dst, file.string()); !r) {
        return undo(r.error());
      }
      done += n;
      dst += n;
      if (first_chunk && fault("move")) {
        return make_error(Errc::temporary, "injected fault: move");
      }
      first_chunk = false;
    }
  }
  if (fsync_retry(fd) != 0) return undo(sys_error("fsync " + file.string(), errno));
  if (fault("moved")) return make_error(Errc::temporary, "injected fault: moved");
  // 4. Cut the file. A writer that ignores the locks may have appended: then
  // undo rather than cut its mail off.
  if (::fstat(fd, &now) != 0) return undo(sys_error("stat " + file.string(), errno));
  if (static_cast<std::uint64_t>(now.st_size) != size) {
    return undo(make_error(Errc::temporary,
                           file.string() + " grew during the rewrite without taking the locks"));
  }
  if (::ftruncate(fd, static_cast<off_t>(new_size)) != 0) {
    return undo(sys_error("truncate " + file.string(), errno));
  }
  if (fsync_retry(fd) != 0) return undo(sys_error("fsync " + file.string(), errno));
  if (fault("truncated")) return make_error(Errc::temporary, "injected fault: truncated");
  keep_times(fd, st);
  jfd.reset();
  // 5. Done: the journal goes (should that fail, the next recovery sees the
  // truncated file and removes it).
  (void)remove_journal(jpath);
  return {};
}

}  // namespace apop::store
