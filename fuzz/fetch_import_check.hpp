// The checks fuzz_fetchmailrc and fuzz_getmailrc share (client/fetch_import.hpp):
// no crash; every imported account is usable as documented; the TOML text
// parses back with toml++ (the reader of `apop fetch --config`); and nothing
// but ImportedAccount::password depends on a secret's value: the input is
// parsed again with every byte of every secret replaced by 'Z' (white space
// kept, so lines and tokens stay where they are), and the accounts, the
// TOML and the report must come out the same.
#pragma once

#include <toml++/toml.h>
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>

#include "client/fetch_import.hpp"

namespace fuzz_import {

using Parse = apop::Result<apop::client::ImportResult> (*)(std::string_view,
                                                           const apop::client::ImportOptions&);

struct Output {
  std::string toml;
  std::string report;
  std::size_t accounts = 0;
};

inline Output run(Parse parse, std::string_view text, apop::client::ImportResult* keep = nullptr) {
  apop::client::ImportOptions opts;
  opts.source_name = "getmailrc-fuzz";
  opts.local_user = "me";
  auto r = parse(text, opts);
  if (!r) return {};
  apop::client::ImportResult res = std::move(r.value());
  const auto spans = res.secret_spans;
  apop::client::finish_import(res);
  Output out;
  std::set<std::string> names;
  for (const auto& a : res.accounts) {
    if (a.name.empty() || !names.insert(a.name).second) __builtin_trap();
    if (a.url.rfind("pop3://", 0) != 0 && a.url.rfind("pop3s://", 0) != 0) __builtin_trap();
    if (a.to.empty()) __builtin_trap();
  }
  out.toml = apop::client::render_toml(res.accounts, {"fuzz"});
  for (const auto& s : res.skipped) out.report += apop::client::format_skipped(s) + "\n";
  out.accounts = res.accounts.size();
  try {
    auto t = toml::parse(out.toml);
    const auto* arr = t["account"].as_array();
    if ((arr ? arr->size() : 0) != res.accounts.size()) __builtin_trap();
  } catch (const toml::parse_error&) {
    __builtin_trap();
  }
  if (keep) {
    *keep = std::move(res);
    keep->secret_spans = spans;
  }
  return out;
}

inline void check(Parse parse, const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  apop::client::ImportResult first;
  const Output a = run(parse, text, &first);
  if (first.secret_spans.empty()) return;
  std::string masked(text);
  for (const auto& sp : first.secret_spans) {
    if (sp.offset > masked.size() || sp.length > masked.size() - sp.offset) __builtin_trap();
    for (std::size_t i = sp.offset; i < sp.offset + sp.length; ++i) {
      const char c = masked[i];
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') masked[i] = 'Z';
    }
  }
  const Output b = run(parse, masked);
  if (a.accounts != b.accounts || a.toml != b.toml || a.report != b.report) __builtin_trap();
}

}  // namespace fuzz_import
