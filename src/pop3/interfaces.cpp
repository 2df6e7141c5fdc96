#include "pop3/interfaces.hpp"

namespace apop::pop3 {

std::string_view auth_failure_name(AuthFailure f) {
  switch (f) {
    case AuthFailure::none:
      return "";
    case AuthFailure::credentials:
      return "credentials";
    case AuthFailure::no_apop_secret:
      return "no-apop-secret";
    case AuthFailure::policy_mechanism:
      return "policy-mechanism";
    case AuthFailure::policy_tls:
      return "policy-tls";
    case AuthFailure::policy_apop_tls:
      return "policy-apop-tls";
    case AuthFailure::policy_cram_md5_tls:
      return "policy-cram-md5-tls";
    case AuthFailure::policy_imported_hash:
      return "policy-imported-hash";
    case AuthFailure::throttled:
      return "throttled";
    case AuthFailure::blocked:
      return "blocked";
    case AuthFailure::temporary:
      return "temporary";
  }
  return "";
}

bool is_policy_refusal(AuthFailure f) {
  switch (f) {
    case AuthFailure::policy_mechanism:
    case AuthFailure::policy_tls:
    case AuthFailure::policy_apop_tls:
    case AuthFailure::policy_cram_md5_tls:
    case AuthFailure::policy_imported_hash:
      return true;
    default:
      return false;
  }
}

}  // namespace apop::pop3
