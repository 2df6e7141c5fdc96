#!/usr/bin/env bash
# `make deb`: builds the Debian package apop_VERSION_ARCH.deb with Debian's
# own tools (debian/, debhelper, dpkg-buildpackage -b) and checks it with
# lintian, which must report no errors.
#
# dpkg-buildpackage builds in the source directory and writes its results
# into the parent directory; to keep the tree clean and the results inside
# it, the tree (its git files, or all but build/ and .git) is copied to build/deb/apop-VERSION/
# and the package lands in build/deb/:
#   build/deb/apop_VERSION_ARCH.deb  (+ .buildinfo, .changes)
#   build/deb/lintian.txt            lintian's report
# JOBS (default 2) is the build's parallelism. No tests run in the package
# build (debian/rules): CI runs them separately.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
JOBS="${JOBS:-2}"
OUT=build/deb
version=$(dpkg-parsechangelog -l debian/changelog -S Version)
src="$OUT/apop-$version"

rm -rf "$OUT"
mkdir -p "$src"
# In a git checkout: the tracked files and the untracked ones .gitignore
# does not exclude (data directories of demos and tests stay out).
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
    tar --null -T - -cf - | tar -xf - -C "$src"
else
  tar --exclude=./build --exclude=./.git --exclude='./obj-*' -cf - . | tar -xf - -C "$src"
fi

start=$SECONDS
(cd "$src" && DEB_BUILD_OPTIONS="nocheck parallel=$JOBS ${DEB_BUILD_OPTIONS:-}" \
  dpkg-buildpackage -b -us -uc)
echo "deb-build: dpkg-buildpackage took $((SECONDS - start)) s"
rm -rf "$src"

deb=$(ls "$OUT"/apop_"$version"_*.deb)
echo "deb-build: $deb"
# --fail-on error: errors fail the build; warnings are fixed or overridden
# with a reason (debian/apop.lintian-overrides) and listed in lintian.txt.
lintian --fail-on error --info --display-info "$deb" | tee "$OUT/lintian.txt"
echo "deb-build: lintian: no errors"
