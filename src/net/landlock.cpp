#include "net/landlock.hpp"

#include <fcntl.h>
#include <linux/landlock.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include "common/posix_fd.hpp"

namespace apop::net {

namespace {

// Access rights by ABI version (the kernel refuses bits it does not know).
constexpr std::uint64_t kRead = LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR;
constexpr std::uint64_t kWriteV1 = LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_REMOVE_DIR |
                                   LANDLOCK_ACCESS_FS_REMOVE_FILE | LANDLOCK_ACCESS_FS_MAKE_DIR |
                                   LANDLOCK_ACCESS_FS_MAKE_REG;
constexpr std::uint64_t kAllV1 = (1ULL << 13) - 1;  // EXECUTE .. MAKE_SYM
constexpr std::uint64_t kRefer = 1ULL << 13;        // ABI 2: link/rename across directories
constexpr std::uint64_t kTruncate = 1ULL << 14;     // ABI 3
constexpr std::uint64_t kFileRights = LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_WRITE_FILE |
                                      kTruncate | LANDLOCK_ACCESS_FS_EXECUTE;

Error sys_error(const std::string& what) {
  return make_error(Errc::permanent, "landlock: " + what + ": " + std::strerror(errno));
}

}  // namespace

int landlock_abi() {
  const long v =
      ::syscall(SYS_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION);
  return v < 0 ? 0 : static_cast<int>(v);
}

Result<bool> restrict_filesystem(const std::vector<FsRule>& rules,
                                 std::vector<std::string>* skipped) {
  const int abi = landlock_abi();
  // ABI 1 forbids every rename across directories (Maildir's tmp -> new,
  // new -> cur): a worker could not do its work under it.
  if (abi < 2) return false;
  // Everything the ABI can restrict is handled (denied unless a rule
  // allows it); later ABIs' rights (sockets, signals) are not file rights.
  std::uint64_t handled = kAllV1;
  if (abi >= 2) handled |= kRefer;
  if (abi >= 3) handled |= kTruncate;
  landlock_ruleset_attr attr{};
  attr.handled_access_fs = handled;
  UniqueFd ruleset(static_cast<int>(
      ::syscall(SYS_landlock_create_ruleset, &attr, sizeof attr, std::uint32_t{0})));
  if (!ruleset) return sys_error("create_ruleset");
  for (const FsRule& rule : rules) {
    UniqueFd where(::open(rule.path.c_str(), O_PATH | O_CLOEXEC));
    if (!where) {
      if (skipped != nullptr) skipped->push_back(rule.path);
      continue;
    }
    struct stat st {};
    if (::fstat(where.get(), &st) != 0) return sys_error("fstat " + rule.path);
    std::uint64_t allowed = kRead;
    if (rule.write) allowed |= kWriteV1 | kRefer | kTruncate;
    if (!S_ISDIR(st.st_mode)) allowed &= kFileRights;  // a file: no directory rights
    landlock_path_beneath_attr beneath{};
    beneath.allowed_access = allowed & handled;
    beneath.parent_fd = where.get();
    if (::syscall(SYS_landlock_add_rule, ruleset.get(), LANDLOCK_RULE_PATH_BENEATH, &beneath,
                  std::uint32_t{0}) != 0) {
      return sys_error("add_rule " + rule.path);
    }
  }
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return sys_error("no_new_privs");
  if (::syscall(SYS_landlock_restrict_self, ruleset.get(), std::uint32_t{0}) != 0) {
    return sys_error("restrict_self");
  }
  return true;
}

}  // namespace apop::net
