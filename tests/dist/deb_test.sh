#!/usr/bin/env bash
# The .deb that CPack builds installs with dpkg -i on this Debian machine, works, and goes away
# with dpkg -r. Builds its own tree (the tool alone, prefix /usr, as `make package` does; the
# compiler flags are the calling tree's, so ccache serves the objects), checks the Depends that
# dpkg-shlibdeps found and the files, installs, runs the installed storemove on a real store, finds
# the man page, completes with the installed completion, verifies the unit, removes the package.
# Exit 77 (skipped) when not root, without dpkg, or when a storemove package is installed already
# (this test must not replace or remove someone's real installation).
# Usage: deb_test.sh SOURCE_DIR TREE BUILD_TYPE
set -euo pipefail
src=$1 tree=$2 build_type=$3

[ "$(id -u)" -eq 0 ] || { echo "deb_test: skipped: needs root for dpkg -i"; exit 77; }
command -v dpkg >/dev/null && command -v dpkg-shlibdeps >/dev/null ||
  { echo "deb_test: skipped: no dpkg or dpkg-shlibdeps"; exit 77; }
# Worktrees of this repository run this test too: one at a time.
exec 9>/run/lock/storemove-deb-test.lock
flock 9
if dpkg-query -W -f='${Status}' storemove 2>/dev/null | grep -q 'installed'; then
  echo "deb_test: skipped: a storemove package is installed already; not touching it"
  exit 77
fi

cmake -S "$src" -B "$tree" -G Ninja -DCMAKE_BUILD_TYPE="$build_type" -DBUILD_TESTING=OFF \
      -DCMAKE_INSTALL_PREFIX=/usr -DSTOREMOVE_WERROR=ON >/dev/null
rm -f "$tree"/storemove_*.deb
cmake --build "$tree" --target package >/dev/null
deb=$(ls "$tree"/storemove_*.deb)
echo "deb_test: built $(basename "$deb")"

fail() { echo "deb_test: $*"; exit 1; }
depends=$(dpkg-deb -f "$deb" Depends)
echo "deb_test: Depends: $depends"
for lib in libdb5.3 libzstd1 libxxhash0 libssl3 'libstdc++6' libc6; do
  [[ ", $depends" == *", $lib "* || ", $depends" == *", $lib,"* || ", $depends" == *", $lib" ]] ||
    fail "Depends lacks $lib"
done
files=$(dpkg-deb -c "$deb" | awk '{ print $6 }')
for f in ./usr/bin/storemove ./usr/bin/storemove-local ./usr/share/man/man1/storemove.1.gz \
         ./usr/share/man/man1/storemove-local.1.gz \
         ./usr/share/bash-completion/completions/storemove ./usr/share/bash-completion/completions/storemove-local \
         ./usr/lib/systemd/system/storemove-serve@.service \
         ./usr/lib/sysusers.d/storemove.conf ./usr/share/doc/storemove/examples/backup-groups.conf \
         ./usr/share/doc/storemove/examples/logrotate ./usr/share/doc/storemove/examples/serve.conf; do
  grep -qx -- "$f" <<<"$files" || fail "the package lacks $f"
done

user_existed=0
getent passwd storemove >/dev/null && user_existed=1
work=$(mktemp -d)
cleanup() {
  dpkg --purge storemove >/dev/null 2>&1 || true
  if [ $user_existed = 0 ] && getent passwd storemove >/dev/null; then
    userdel storemove 2>/dev/null || true
    getent group storemove >/dev/null && groupdel storemove 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

dpkg -i "$deb" >/dev/null || fail "dpkg -i failed"
version=$(/usr/bin/storemove --version)
[[ $version == "storemove $(dpkg-deb -f "$deb" Version)"* ]] || fail "storemove --version says '$version'"
echo "deb_test: installed: $version"
[ "$(man -w storemove)" = /usr/share/man/man1/storemove.1.gz ] || fail "man -w storemove: $(man -w storemove 2>&1)"
# storemove-local's page is a .so to storemove's, which man-db follows.
[ "$(man -w storemove-local)" = /usr/share/man/man1/storemove.1.gz ] ||
  fail "man -w storemove-local: $(man -w storemove-local 2>&1)"
getent passwd storemove >/dev/null || fail "postinst made no user storemove"

# The installed program on a real store.
/usr/bin/storemove gen --store "$work/store" --users 3 --messages-per-user 5 --json >"$work/gen.json"
grep -q '"storemove_version"' "$work/gen.json" || fail "gen --json has no storemove_version"
/usr/bin/storemove backup --store "$work/store" -f "$work/backup" 2>/dev/null
/usr/bin/storemove init --store "$work/copy" >/dev/null
/usr/bin/storemove restore --store "$work/copy" -f "$work/backup" 2>/dev/null
/usr/bin/storemove verify --store "$work/copy" --source "$work/store" 2>/dev/null
# storemove-local delivers into the same store, without libssl/libcrypto.
printf 'Subject: local\r\n\r\nbody\r\n' | /usr/bin/storemove-local deliver --store "$work/copy" --user newbie --create >/dev/null ||
  fail "storemove-local deliver failed"
/usr/bin/storemove list --store "$work/copy" | grep -q 'user/newbie/INBOX' || fail "storemove-local's delivery is not listed"
! ldd /usr/bin/storemove-local | grep -Eq 'libssl|libcrypto' || fail "storemove-local loads libssl or libcrypto"

# The installed completion completes a subcommand of the installed program.
out=$(bash -c 'source /usr/share/bash-completion/completions/storemove
               COMP_WORDS=(storemove rest); COMP_CWORD=1; _storemove; echo "${COMPREPLY[*]}"')
[ "$out" = restore ] || fail "installed completion of 'storemove rest' gave '$out'"

if command -v systemd-analyze >/dev/null; then
  said=$(systemd-analyze verify /usr/lib/systemd/system/storemove-serve@.service 2>&1) ||
    fail "systemd-analyze verify: $said"
  [ -z "$said" ] || fail "systemd-analyze verify: $said"
  echo "deb_test: systemd-analyze verify: clean"
fi

dpkg -r storemove >/dev/null || fail "dpkg -r failed"
[ ! -e /usr/bin/storemove ] && [ ! -e /usr/bin/storemove-local ] || fail "/usr/bin/storemove is still there after dpkg -r"
dpkg --purge storemove >/dev/null || fail "dpkg --purge failed"
echo "deb_test: installed, used and removed"
