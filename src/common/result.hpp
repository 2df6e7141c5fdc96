// Result<T>: expected failures as values (C++20 has no std::expected).
// Contract: a Result holds either a value or an Error, never both. Accessing
// value() on an error (or error() on a value) is a programming bug and aborts.
#pragma once

#include <cstdlib>
#include <string>
#include <utility>
#include <variant>

namespace apop {

enum class Errc {
  ok = 0,
  not_found,    // no such user / message / file
  in_use,       // maildrop locked by another session   -> [IN-USE]
  temporary,    // disk full, lock timeout, I/O error    -> [SYS/TEMP], EX_TEMPFAIL
  permanent,    // corrupt data, bad configuration        -> [SYS/PERM]
  invalid,      // bad input from the caller
  auth_failed,  // wrong credentials
  exists,       // object already exists
  over_quota,   // the mailbox is full (Maildir++ quota)    -> 552 5.2.2, EX_NOPERM
};

struct Error {
  Errc code = Errc::temporary;
  std::string message;  // for logs and CLI; never contains a secret
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit on purpose
  Result(Error e) : v_(std::in_place_index<1>, std::move(e)) {}      // NOLINT
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return check_value(), std::get<0>(v_); }
  const T& value() const& { return check_value(), std::get<0>(v_); }
  T&& value() && { return check_value(), std::move(std::get<0>(v_)); }
  T* operator->() { return &value(); }
  T& operator*() & { return value(); }
  const Error& error() const {
    if (ok()) std::abort();
    return std::get<1>(v_);
  }

 private:
  void check_value() const {
    if (!ok()) std::abort();
  }
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error e) : err_(std::move(e)), ok_(false) {}  // NOLINT
  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const {
    if (ok_) std::abort();
    return err_;
  }

 private:
  Error err_;
  bool ok_ = true;
};

inline Error make_error(Errc code, std::string message) { return Error{code, std::move(message)}; }

}  // namespace apop
