#!/usr/bin/env bash
# CI step (.ci/run, after `make test`): builds the Debian package
# (scripts/deb-build.sh: release settings, the apop target only, lintian
# without errors), then on this machine, as root (or through sudo):
#   1. installs it with apt-get (dependencies from the archive) and checks
#      `apop --version`, the unit (systemd-analyze verify, else its
#      ExecStart), the conffile registration, the users apop and apop-auth,
#      /var/lib/apop, and `apop config check` of the shipped configuration;
#   2. `apt-get remove`: the binary goes, /etc/apop and /var/lib/apop stay;
#   3. reinstall, then an upgrade to a repacked higher version, both with
#      --force-confold: the edited conffile and the data are kept;
#   4. `apt-get purge`: the configuration goes, the data stays.
# Refuses to run when apop is already installed as a package or
# /usr/bin/apop exists. Leaves nothing installed; users and /var/lib/apop
# are removed again if this script created them. Does not start the
# service (there may be no systemd; the maintainer scripts cope).
#   DEB_TEST_NO_BUILD=1  use build/deb/apop_*.deb as it is
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DEBIAN_FRONTEND=noninteractive
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  SUDO=(sudo env DEBIAN_FRONTEND=noninteractive)
fi
APT=("${SUDO[@]}" apt-get -y -q -o Dpkg::Options::=--force-confold)

fail() { echo "deb-test: FAIL: $*" >&2; exit 1; }
ok() { echo "deb-test: ok: $*"; }

if [ "$(dpkg-query -W -f='${Status}' apop 2>/dev/null || true)" != "" ] &&
   [ "$(dpkg-query -W -f='${Status}' apop 2>/dev/null)" != "unknown ok not-installed" ]; then
  fail "the package apop is already known to dpkg ($(dpkg-query -W -f='${Status}' apop)); remove it first"
fi
[ ! -e /usr/bin/apop ] || fail "/usr/bin/apop exists and does not come from this test"

if [ -z "${DEB_TEST_NO_BUILD:-}" ]; then
  bash scripts/deb-build.sh
fi
version=$(dpkg-parsechangelog -l debian/changelog -S Version)
deb=$(ls build/deb/apop_"$version"_*.deb)
[ -f "$deb" ] || fail "no package build/deb/apop_${version}_*.deb"

# The service's life cycle in the maintainer scripts (there is no systemd
# here to watch it): not started on install, try-restarted after an upgrade
# (not stopped before it), stopped on remove.
ctl=$(mktemp -d)
dpkg-deb -e "$deb" "$ctl/DEBIAN"
grep -q "deb-systemd-invoke try-restart 'apop.service'" "$ctl/DEBIAN/postinst" ||
  fail "postinst does not try-restart apop.service after an upgrade"
! grep -q 'deb-systemd-invoke start' "$ctl/DEBIAN/postinst" || fail "postinst starts apop.service"
! grep -qs 'deb-systemd-invoke stop' "$ctl/DEBIAN/preinst" || fail "preinst stops apop.service before an upgrade"
grep -q 'deb-systemd-invoke stop apop.service' "$ctl/DEBIAN/prerm" || fail "prerm does not stop apop.service on remove"
rm -rf "$ctl"
ok "maintainer scripts: not started on install, try-restart on upgrade, stop on remove"

# What this script must undo at the end.
had_user_apop=0; getent passwd apop >/dev/null && had_user_apop=1
had_user_auth=0; getent passwd apop-auth >/dev/null && had_user_auth=1
had_data=0; [ -e /var/lib/apop ] && had_data=1
had_etc=0; [ -e /etc/apop ] && had_etc=1
work=$(mktemp -d)
cleanup() {
  "${SUDO[@]}" dpkg --purge apop >/dev/null 2>&1 || true
  if [ "$had_data" = 1 ]; then
    "${SUDO[@]}" rm -f /var/lib/apop/deb-test-data
  else
    "${SUDO[@]}" rm -rf /var/lib/apop
  fi
  [ "$had_etc" = 1 ] || "${SUDO[@]}" rm -rf /etc/apop
  if [ "$had_user_auth" = 0 ]; then
    "${SUDO[@]}" userdel apop-auth 2>/dev/null || true
    "${SUDO[@]}" groupdel apop-auth 2>/dev/null || true
  fi
  if [ "$had_user_apop" = 0 ]; then
    "${SUDO[@]}" userdel apop 2>/dev/null || true
    "${SUDO[@]}" groupdel apop 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# --- 1. install -----------------------------------------------------------
"${APT[@]}" install "./$deb"
[ "$(dpkg-query -W -f='${Status} ${Version}' apop)" = "install ok installed $version" ] ||
  fail "dpkg does not show apop $version installed"
ok "installed $(dpkg-query -W -f='${Version}' apop)"

[ "$(/usr/bin/apop --version)" = "apop $version" ] || fail "apop --version: $(/usr/bin/apop --version)"
ok "apop --version: apop $version"

unit=/lib/systemd/system/apop.service
[ -f "$unit" ] || fail "no $unit"
grep -qx 'ExecStart=/usr/bin/apop serve --config /etc/apop/apop.toml --user apop --group apop' "$unit" ||
  fail "$unit: ExecStart: $(grep '^ExecStart=' "$unit")"
! grep -q /usr/local "$unit" /lib/systemd/system/apop-fetch@.service ||
  fail "a unit still names /usr/local"
if command -v systemd-analyze >/dev/null 2>&1; then
  systemd-analyze verify "$unit" || fail "systemd-analyze verify $unit"
  ok "systemd-analyze verify $unit"
fi
# Enabled (deb-systemd-helper makes the link without a running systemd), not started.
[ -L /etc/systemd/system/multi-user.target.wants/apop.service ] || fail "apop.service is not enabled"
ok "unit $unit: ExecStart /usr/bin/apop, enabled"

dpkg-query -W -f='${Conffiles}\n' apop | grep -q '^ /etc/apop/apop.toml ' ||
  fail "/etc/apop/apop.toml is not a conffile: $(dpkg-query -W -f='${Conffiles}' apop)"
for f in /etc/fail2ban/filter.d/apop.conf /etc/fail2ban/jail.d/apop.conf; do
  dpkg-query -W -f='${Conffiles}\n' apop | grep -q "^ $f " || fail "$f is not a conffile"
done
ok "conffiles: $(dpkg-query -W -f='${Conffiles}' apop | awk 'NF {printf "%s ", $1}')"

for u in apop apop-auth; do
  getent passwd "$u" >/dev/null || fail "no user $u"
done
[ "$(stat -c '%U %G %a' /var/lib/apop)" = "apop apop 700" ] ||
  fail "/var/lib/apop: $(stat -c '%U %G %a' /var/lib/apop)"
ok "users apop, apop-auth; /var/lib/apop apop:apop 0700"

"${SUDO[@]}" /usr/bin/apop config check --config /etc/apop/apop.toml >/dev/null ||
  fail "apop config check --config /etc/apop/apop.toml"
ok "apop config check --config /etc/apop/apop.toml"
[ -f /usr/share/man/man8/apop.8.gz ] || fail "no apop(8)"
[ -f /usr/share/doc/apop/copyright ] || fail "no copyright"

# Data and an administrator's edit, to be kept from here on.
"${SUDO[@]}" sh -c 'echo data > /var/lib/apop/deb-test-data'
"${SUDO[@]}" sh -c 'echo "# edited by deb-test" >> /etc/apop/apop.toml'

# --- 2. remove ------------------------------------------------------------
"${APT[@]}" remove apop
[ ! -e /usr/bin/apop ] || fail "remove left /usr/bin/apop"
grep -q '^# edited by deb-test$' /etc/apop/apop.toml || fail "remove lost /etc/apop/apop.toml"
[ -f /var/lib/apop/deb-test-data ] || fail "remove lost /var/lib/apop"
ok "remove: binary gone, /etc/apop/apop.toml (edited) and /var/lib/apop kept"

# --- 3. reinstall, upgrade ------------------------------------------------
"${APT[@]}" install "./$deb"
grep -q '^# edited by deb-test$' /etc/apop/apop.toml || fail "reinstall replaced the edited conffile"
[ -f /var/lib/apop/deb-test-data ] || fail "reinstall lost /var/lib/apop"
ok "reinstall: edited conffile and data kept"

# The same package with a higher version: an upgrade, with the maintainer
# scripts' upgrade paths (preinst/postinst with the old version).
up="$version+debtest1"
dpkg-deb -R "$deb" "$work/pkg"
sed -i "s/^Version: .*/Version: $up/" "$work/pkg/DEBIAN/control"
dpkg-deb --root-owner-group -b "$work/pkg" "$work/apop_${up}.deb" >/dev/null
"${APT[@]}" install "$work/apop_${up}.deb"
[ "$(dpkg-query -W -f='${Version}' apop)" = "$up" ] || fail "upgrade to $up"
grep -q '^# edited by deb-test$' /etc/apop/apop.toml || fail "upgrade replaced the edited conffile"
[ -f /var/lib/apop/deb-test-data ] || fail "upgrade lost /var/lib/apop"
[ -L /etc/systemd/system/multi-user.target.wants/apop.service ] || fail "upgrade disabled apop.service"
ok "upgrade $version -> $up: edited conffile, data and enablement kept"

# --- 4. purge -------------------------------------------------------------
"${APT[@]}" purge apop
[ "$(dpkg-query -W -f='${Status}' apop 2>/dev/null || echo gone)" != "install ok installed" ] ||
  fail "purge left apop installed"
[ ! -e /etc/apop/apop.toml ] || fail "purge left /etc/apop/apop.toml"
[ ! -e /etc/apop ] || fail "purge left /etc/apop: $(ls -A /etc/apop)"
[ ! -e /etc/fail2ban/jail.d/apop.conf ] || fail "purge left the fail2ban jail"
[ ! -e /etc/systemd/system/multi-user.target.wants/apop.service ] || fail "purge left the unit enabled"
[ -f /var/lib/apop/deb-test-data ] || fail "purge removed /var/lib/apop"
getent passwd apop >/dev/null || fail "purge removed the user apop"
ok "purge: configuration gone; /var/lib/apop and the users kept"
echo "deb-test: all checks passed"
