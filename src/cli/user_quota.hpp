// The quota lines of `apop user show` and `apop user quota`
// (cli/cmd_user_quota.cpp).
#pragma once

#include <optional>
#include <ostream>
#include <string>

#include "auth/credential_store.hpp"
#include "cli/common.hpp"
#include "cli/serve_config.hpp"
#include "store/quota.hpp"

namespace apop::cli {

// The usage of `user`'s mailbox (its own location, else cfg.mail_location);
// nullopt when it does not exist yet. A Maildir's maildirsize is brought up
// to date with `limits` when they are set (store::maildir_quota_usage).
Result<std::optional<store::QuotaUsage>> account_usage(const ServeConfig& cfg, const DataDir& dir,
                                                       const std::string& user,
                                                       const std::optional<std::string>& own,
                                                       const store::QuotaLimits& limits);

// "quota bytes: ...", "quota messages: ...", "usage bytes: N of L (P%)",
// "usage messages: ..." ("(default)" marks a limit the account inherits).
void print_quota(std::ostream& out, const auth::AccountQuota& own, const store::QuotaLimits& limits,
                 const std::optional<store::QuotaUsage>& usage);

}  // namespace apop::cli
