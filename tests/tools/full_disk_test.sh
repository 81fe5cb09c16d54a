#!/bin/bash
# A store on a full filesystem: after a restore ran out of space (its commit failed, the
# environment panicked), the next command must stop with one line, not die of SIGBUS in libdb's
# recovery touching memory-mapped region pages that have no space behind them
# (docs/store-format.md §3, "A full filesystem"). Needs root for a tmpfs of its own in a private
# mount namespace; skipped (77) otherwise.
#   full_disk_test.sh STOREMOVE
set -u
SM=$1
if [ "${FULL_DISK_INNER:-}" != 1 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v unshare >/dev/null; then
    echo "full_disk_test: skipped: needs root and unshare(1) for a tmpfs of its own"; exit 77
  fi
  W=$(mktemp -d /tmp/full_disk_test.XXXXXX)
  trap 'rm -rf "$W"' EXIT
  FULL_DISK_INNER=1 unshare -m "$0" "$SM" "$W"; exit $?
fi
W=$2; MNT=$W/mnt; fail() { echo "full_disk_test: FAIL: $*"; exit 1; }
mkdir -p "$MNT" && mount --make-rprivate / && mount -t tmpfs -o size=12m tmpfs "$MNT" || { echo "full_disk_test: skipped: cannot mount a tmpfs"; exit 77; }
"$SM" gen --store "$W/big" --users 40 --messages-per-user 60 --seed 3 >/dev/null || fail "gen"
"$SM" backup --store "$W/big" -f "$W/big.sm" --compress none 2>/dev/null || fail "backup of the source"
"$SM" init --store "$MNT/st" >/dev/null || fail "init"
"$SM" restore --store "$MNT/st" -f "$W/big.sm" >/dev/null 2>"$W/r1.err"; r1=$?
[ $r1 != 0 ] || fail "the restore fitted: make the source bigger"
dd if=/dev/zero of="$MNT/fill" bs=64k 2>/dev/null
"$SM" restore --store "$MNT/st" -f "$W/big.sm" >/dev/null 2>"$W/r2.err"; r2=$?
"$SM" backup --store "$MNT/st" -f "$W/out.sm" 2>"$W/b.err"; b=$?
echo "restores: $r1 $r2; backup on the full filesystem: $b: $(cat "$W/b.err")"
[ $b -lt 128 ] || fail "backup died of signal $((b - 128))"
[ $b != 0 ] || fail "backup exited 0 on a full filesystem"
[ "$(wc -l < "$W/b.err")" = 1 ] || fail "not one line: $(cat "$W/b.err")"
grep -q "no space left on device" "$W/b.err" || fail "the line does not say the disk is full"
rm -f "$MNT/fill"; mount -o remount,size=64m "$MNT" || fail "remount"
"$SM" backup --store "$MNT/st" -f "$W/out.sm" 2>"$W/b2.err" || fail "backup once there is room: $(cat "$W/b2.err")"
echo "full_disk_test: ok"
