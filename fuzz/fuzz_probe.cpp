// `apop probe`'s analysis (client/probe.hpp) on what a hostile server could
// send: greetings, CAPA bodies, the STLS reply and the certificate strings.
// Input: bytes 0-1 = flags, then sections separated by '\x01', each a list of
// '\n'-separated lines: plain greetings, plain CAPA, STLS reply + CAPA inside
// STLS, implicit-TLS greetings, implicit-TLS CAPA, certificate
// subject/issuer/protocol/verify error.
//
// Invariants (__builtin_trap): the JSON report is valid JSON with the same
// grade; the grade is a letter A-F, and F whenever timestamps repeat; the
// entropy estimate is finite and not negative; the text report is printable
// ASCII lines (no terminal escape sequences from the server).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "client/probe.hpp"

namespace {

using namespace apop::client;

std::vector<std::string> lines(std::string_view s) {
  std::vector<std::string> out;
  while (!s.empty() && out.size() < 200) {
    const std::size_t nl = s.find('\n');
    out.emplace_back(s.substr(0, nl));
    if (nl == std::string_view::npos) break;
    s.remove_prefix(nl + 1);
  }
  return out;
}

void check(const probe::TimestampAnalysis& t) {
  if (!std::isfinite(t.entropy_bits) || t.entropy_bits < 0) __builtin_trap();
  for (const auto& f : t.fields) {
    if (!std::isfinite(f.bits) || f.bits < 0) __builtin_trap();
  }
  if (t.invalid_examples.size() > 3) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const unsigned flags = data[0] | (unsigned{data[1]} << 8);
  std::string_view in(reinterpret_cast<const char*>(data + 2), size - 2);
  std::vector<std::string> sec[6];
  for (auto& s : sec) {
    const std::size_t cut = in.find('\x01');
    s = lines(in.substr(0, cut));
    in = cut == std::string_view::npos ? std::string_view() : in.substr(cut + 1);
  }
  auto bit = [flags](unsigned n) { return (flags >> n & 1) != 0; };

  probe::ProbeInput p;
  p.host = "mail.example.org";
  p.reachable = !bit(0);
  if (!p.reachable) p.connect_error = "connection refused";
  p.greetings = sec[0];
  p.capa = probe::parse_capa(sec[1]);
  p.capa.received = bit(1);
  if (bit(2) && !sec[2].empty()) {
    p.stls_reply = sec[2][0];
    p.stls.attempted = true;
    p.stls.ok = bit(3);
    p.stls.injection = bit(4);
    p.stls.capa = probe::parse_capa(std::vector<std::string>(sec[2].begin() + 1, sec[2].end()));
    p.stls.capa.received = bit(5);
  }
  if (bit(6)) {
    p.tls_port = 995;
    p.tls_reachable = bit(7);
    p.tls_greetings = sec[3];
    p.implicit_tls.attempted = true;
    p.implicit_tls.ok = bit(8);
    p.implicit_tls.capa = probe::parse_capa(sec[4]);
  }
  for (auto* o : {&p.stls, &p.implicit_tls}) {
    if (!o->ok) {
      o->error = sec[5].empty() ? "" : sec[5][0];
      continue;
    }
    o->info.active = true;
    o->info.verified = bit(9);
    o->info.hostname_match = bit(10);
    o->info.protocol = sec[5].size() > 1 ? sec[5][1] : "TLSv1.3";
    o->info.subject = sec[5].size() > 2 ? sec[5][2] : "";
    o->info.issuer = sec[5].size() > 3 ? sec[5][3] : "";
    o->info.verify_error = sec[5].size() > 4 ? sec[5][4] : "";
    o->info.not_after = bit(11) ? 1'700'000'000 : 1'900'000'000;
  }
  p.now = 1'800'000'000;
  p.insecure_ok = bit(12);

  const probe::Report r = probe::analyze(p);
  if (r.grade < 'A' || r.grade > 'F') __builtin_trap();
  check(r.apop_plain);
  check(r.apop_tls);
  if ((r.apop_plain.repeats || r.apop_tls.repeats) && r.grade != 'F') __builtin_trap();
  for (const auto& f : r.findings) {
    if (f.cap > r.grade) __builtin_trap();  // the grade is the worst cap
  }
  const std::string json = probe::to_json(r);
  const auto doc = nlohmann::json::parse(json, nullptr, false);
  if (doc.is_discarded() || !doc.contains("grade")) __builtin_trap();
  if (doc["grade"] != std::string(1, r.grade)) __builtin_trap();
  // The text report goes to a terminal: nothing a server sent may carry
  // control characters (escape sequences) or raw 8-bit bytes into it.
  const std::string text = probe::to_text(r);
  if (text.empty()) __builtin_trap();
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (c != '\n' && (u < 0x20 || u > 0x7e)) __builtin_trap();
  }
  return 0;
}
