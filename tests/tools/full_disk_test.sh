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
# A reserve without its blocks (a sparse copy, rsync -S) would free nothing: made again, whole.
R="$MNT/st/mboxlist/storemove.reserve"
: > "$R"; "$SM" list --store "$MNT/st" >/dev/null || fail "list"
[ "$(du -k "$R" | cut -f1)" -ge 4096 ] || fail "an empty reserve was kept: $(du -k "$R")"
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
# The command that frees space still runs: delete gives up the store's reserve (4 MiB kept while
# there was room) to open it (helper-102: every command, delete too, exited 74 on a full store).
"$SM" users --store "$MNT/st" >/dev/null 2>"$W/u.err" && fail "users ran on the full filesystem"
grep -q "storemove delete still runs" "$W/u.err" || fail "the line does not say delete still runs: $(cat "$W/u.err")"
[ ! -e "$MNT/st/mboxlist/storemove.reserve" ] && fail "no reserve to give up"
users=$("$SM" users --store "$W/big" | awk 'NR > 1 && NF > 3 { print $1 }' | head -n 30)
# (the source's first 30 users: those the failed restore did not reach are "no such user", 66)
"$SM" delete --store "$MNT/st" --force $users >"$W/d.out" 2>"$W/d.err"
grep -q "^deleted user " "$W/d.out" || fail "delete on the full filesystem deleted nobody: $(head -c 600 "$W/d.err")"
grep -v "no such user" "$W/d.err" && fail "delete on the full filesystem: errors other than unknown users"
"$SM" list --store "$MNT/st" >/dev/null 2>"$W/l.err" || fail "list after the delete freed space: $(cat "$W/l.err")"
echo "delete on the full filesystem: $(wc -l < "$W/d.out") lines, then list ran"
rm -f "$MNT/fill"; mount -o remount,size=64m "$MNT" || fail "remount"
"$SM" list --store "$MNT/st" >/dev/null || fail "list with room"
[ -e "$MNT/st/mboxlist/storemove.reserve" ] || fail "the reserve was not made again once there was room"
"$SM" backup --store "$MNT/st" -f "$W/out.sm" 2>"$W/b2.err" || fail "backup once there is room: $(cat "$W/b2.err")"
echo "full_disk_test: ok"
