#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages that building and testing apop need.
# Only missing packages are installed; when nothing is missing, nothing runs
# (no apt-get update, no sudo). Usage:
#   scripts/deps.sh          install what is missing
#   scripts/deps.sh --list   print the package list (used by .ci/run)
#   scripts/deps.sh --check  exit 1 and name the missing packages, install nothing
set -euo pipefail

PACKAGES=(
  # toolchain and build system
  build-essential cmake ninja-build g++ clang-14 libclang-rt-14-dev clang-format-14
  # libraries
  libasio-dev libssl-dev libsqlite3-dev libcli11-dev libspdlog-dev libfmt-dev
  libtomlplusplus-dev nlohmann-json3-dev prometheus-cpp-dev
  # libpq-fe.h and libpq for src/pg (CMakeLists.txt find_path/find_library;
  # a Build-Depends of debian/control)
  libpq-dev
  # crypt_r for imported crypt(3) hashes (apop user import)
  libcrypt-dev
  # seccomp allow-list of the network workers (src/net/sandbox.hpp)
  libseccomp-dev pkg-config
  # test frameworks
  libgtest-dev libgmock-dev libbenchmark-dev
  # interop test clients and tools
  python3 curl fetchmail openssl sqlite3
  # IPv6 prefix test: local routes on lo (tests/interop/test_ipv6_prefix.py)
  iproute2
  # load test: seals provisioned accounts' secrets (tests/interop/loadgen.py)
  python3-cryptography
  # log filter check (fail2ban-regex)
  fail2ban
  # Debian package (make deb, scripts/deb-build.sh, scripts/deb-test.sh):
  # dpkg-buildpackage, dh with dh_installsysusers, and the package check
  dpkg-dev debhelper lintian
  # man page check (groff -man -ww)
  groff-base
  # peer server for interop tests and benchmarks
  dovecot-pop3d
  # IMAP side of the migration test (docs/migration.md)
  dovecot-imapd
  # LMTP server the hand-off test delivers into (tests/interop/test_fetch_handoff.py,
  # `apop fetch --to lmtp:`)
  dovecot-lmtpd
  # Postfix interop test and LMTP benchmark (tests/interop/test_postfix.py,
  # bench/lmtp_postfix.py): a private instance, never the system one. It is
  # an MTA: installing it replaces exim4 if present (nothing here needs exim4).
  postfix
  # scale-out test (tests/interop/test_scaleout.py): shared state and load balancer
  postgresql haproxy
)

installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

case "${1:-}" in
  --list) printf '%s\n' "${PACKAGES[@]}"; exit 0 ;;
  --check|"") ;;
  *) echo "usage: $0 [--list|--check]" >&2; exit 64 ;;
esac

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "deps.sh: this script supports Debian/Ubuntu (dpkg/apt) only; install the" >&2
  echo "equivalents of: ${PACKAGES[*]}" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  installed "$p" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "deps.sh: all ${#PACKAGES[@]} packages are installed"
  exit 0
fi

echo "deps.sh: missing: ${missing[*]}"
[ "${1:-}" = "--check" ] && exit 1

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "deps.sh: not root and no sudo" >&2; exit 1; }
  SUDO=(sudo)
fi
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
# Postfix: no system mail configuration, so no system instance starts (the
# tests run private instances); otherwise debconf's default sets up an
# Internet site listening on port 25.
if printf '%s\n' "${missing[@]}" | grep -qx postfix; then
  echo "postfix postfix/main_mailer_type select No configuration" |
    "${SUDO[@]}" debconf-set-selections
fi
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y --no-install-recommends "${missing[@]}"
