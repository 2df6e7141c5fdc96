#include "client/migrate.hpp"

#include <fcntl.h>
#include <sys/file.h>

#include <cerrno>
#include <cstring>

#include "store/maildir.hpp"
#include "store/maildir_name.hpp"
#include "store/uidl_map.hpp"

namespace apop::client {

namespace fs = std::filesystem;

namespace {

// Base names present in new/ and cur/.
Result<std::set<std::string>> live_bases(const fs::path& maildir) {
  std::set<std::string> out;
  for (const char* sub : {"new", "cur"}) {
    std::error_code ec;
    for (fs::directory_iterator it(maildir / sub, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      if (name.empty() || name[0] == '.') continue;
      out.emplace(store::maildir_base_name(name));
    }
    if (ec)
      return make_error(Errc::temporary, "list " + (maildir / sub).string() + ": " + ec.message());
  }
  return out;
}

// One migration per Maildir at a time: an exclusive, non-blocking flock.
Result<UniqueFd> lock_maildir(const fs::path& maildir) {
  UniqueFd lock(::open((maildir / "apop-migrate.lock").c_str(),
                       O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!lock) return make_error(Errc::temporary, std::strerror(errno));
  if (::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
    return make_error(Errc::temporary, "another apop migrate into this Maildir is running");
  }
  return lock;
}

// The UIDLs of messages a cut run already put into the Maildir: map entries
// whose file is in new/ or cur/.
Result<std::set<std::string>> present_uidls(const fs::path& maildir) {
  auto map = store::load_uidl_map(maildir);
  if (!map) return map.error();
  auto live = live_bases(maildir);
  if (!live) return live.error();
  std::set<std::string> present;
  for (const auto& [base, uidl] : map->by_base) {
    if (live->count(base) != 0) present.insert(uidl);
  }
  return present;
}

}  // namespace

std::string migration_safe_name(std::string_view s) {
  std::string out;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '-' || c == '_' || c == '@';
    out.push_back(ok ? c : '_');
  }
  return out;
}

// Skips messages a cut run already put into the Maildir (map entry with a
// live file); everything else goes to the Maildir destination.
class Migration::SkipPresent final : public Destination {
 public:
  SkipPresent(std::unique_ptr<Destination> inner, std::set<std::string> present)
      : inner_(std::move(inner)), present_(std::move(present)) {}
  Result<void> store(std::string_view message, const MessageMeta& meta) override {
    if (!meta.uidl.empty() && present_.count(meta.uidl) != 0) {
      ++already_;
      return {};
    }
    auto r = inner_->store(message, meta);
    if (r) present_.insert(meta.uidl);
    return r;
  }
  std::string describe() const override { return inner_->describe(); }
  std::uint64_t already() const { return already_; }

 private:
  std::unique_ptr<Destination> inner_;
  std::set<std::string> present_;
  std::uint64_t already_ = 0;
};

Migration::Migration(fs::path maildir, UniqueFd lock, fs::path state_path, AccountState state)
    : maildir_(std::move(maildir)),
      lock_(std::move(lock)),
      state_path_(std::move(state_path)),
      state_(std::move(state)) {}

Migration::~Migration() = default;

Result<std::unique_ptr<Migration>> Migration::open(const fs::path& maildir,
                                                   const MigrationSource& source,
                                                   const DestinationOptions& base) {
  if (auto r = store::ensure_maildir(maildir); !r) return r.error();
  auto lock = lock_maildir(maildir);
  if (!lock) return lock.error();
  const fs::path state_path =
      maildir / ("apop-migrate-" + migration_safe_name(source.host) + "-" +
                 std::to_string(source.port) + "-" + migration_safe_name(source.user) + ".state");
  auto state = AccountState::load(state_path);
  if (!state) {
    return make_error(state.error().code,
                      "state file " + state_path.string() + ": " + state.error().message);
  }
  auto present = present_uidls(maildir);
  if (!present) return present.error();

  // The UIDL is pinned before the message appears in new/ (step 2 above).
  DestinationOptions dopts = base;
  dopts.before_publish = [maildir](std::string_view base_name,
                                   const MessageMeta& meta) -> Result<void> {
    if (meta.uidl.empty()) return make_error(Errc::permanent, "message without UIDL");
    return store::append_uidl_map(maildir, {{std::string(base_name), meta.uidl}});
  };
  auto inner = open_destination("maildir:" + maildir.string(), dopts);
  if (!inner) return inner.error();

  std::unique_ptr<Migration> m(
      new Migration(maildir, std::move(*lock), state_path, std::move(*state)));
  m->dest_ = std::make_unique<SkipPresent>(std::move(*inner), std::move(*present));
  return m;
}

FetchSummary Migration::run(Transport& t, FetchOptions opts) {
  opts.keep = true;  // never DELE on the source
  return run_session(t, *dest_, state_, opts);
}

Destination& Migration::destination() { return *dest_; }

std::uint64_t Migration::already_present() const { return dest_->already(); }

MigrationCounts Migration::counts(const FetchSummary& sum) const {
  MigrationCounts c;
  c.copied = sum.stored - already_present();
  c.done_before = sum.on_server >= sum.new_messages + sum.store_failed
                      ? sum.on_server - sum.new_messages - sum.store_failed
                      : 0;
  c.already_migrated = c.done_before + already_present();
  return c;
}

}  // namespace apop::client
