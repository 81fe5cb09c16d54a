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
# restore -c y on a filesystem that fills: the failed folders' lines and the summary are printed
# (the final checkpoint met the full disk and threw them away, one line left: helper-158), and
# a rerun with room completes it.
CY=$W/cy; mkdir -p "$CY" && mount -t tmpfs -o size=12m tmpfs "$CY" || fail "mount a second tmpfs"
"$SM" init --store "$CY/st" >/dev/null || fail "init for -c y"
"$SM" restore --store "$CY/st" -f "$W/big.sm" -c y >"$W/cy.out" 2>"$W/cy.err"; cy=$?
echo "restore -c y on a full filesystem: exit $cy, $(grep -c 'folder skipped' "$W/cy.err") folders skipped, $(wc -l < "$W/cy.err") lines"
[ $cy = 74 ] || fail "restore -c y on a full filesystem: exit $cy: $(head -3 "$W/cy.err")"
grep -q "^restore: .* ERRORS" "$W/cy.err" || fail "restore -c y printed no summary: $(head -3 "$W/cy.err")"
grep -q "No space left on device; folder skipped" "$W/cy.err" || fail "restore -c y named no failed folder: $(head -3 "$W/cy.err")"
mount -o remount,size=64m "$CY" || fail "remount the second tmpfs"
"$SM" restore --store "$CY/st" -f "$W/big.sm" >/dev/null 2>"$W/cy2.err" || fail "rerun of restore -c y: $(cat "$W/cy2.err")"
"$SM" verify --store "$CY/st" --source "$W/big" >/dev/null 2>&1 || fail "after the rerun the store is not the source's"
grep -v "folder skipped" "$W/cy.err" | tail -4; umount "$CY"
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
# Deliveries killed -9 at random moments on a nearly full filesystem: the next open recovers the
# environment, and libdb zero-fills the rest of the log file it truncates. With 10 MiB log files
# that took every free block and wedged the store, delete included (helper-158: 3 runs of 3, at
# the 1st to 12th kill); log files are 512 KiB now, and 3 MiB free is room for a recovery.
KL=$W/kl; mkdir -p "$KL" && mount -t tmpfs -o size=16m tmpfs "$KL" || fail "mount a third tmpfs"
"$SM" init --store "$KL/st" >/dev/null || fail "init for the recovery case"
printf 'From: a@b\nSubject: one\n\nx\n' | "$SM" deliver --store "$KL/st" --user eve --create || fail "deliver"
fallocate -l $(( ($(df -k --output=avail "$KL" | tail -1) - 3072) * 1024 )) "$KL/filler" || fail "fallocate"
for i in $(seq 60); do
  printf 'X-Seq: %d\n\nbody\n' "$i" | "$SM" deliver --store "$KL/st" --user eve 2>/dev/null & kp=$!
  sleep "0.0$((RANDOM % 40))"  # a kill at a random moment of the delivery
  kill -9 $kp 2>/dev/null; wait $kp 2>/dev/null
  "$SM" list --store "$KL/st" >/dev/null 2>"$W/kl.err" || fail "the open after kill $i, 3 MiB free at the start: $(cat "$W/kl.err")"
done
echo "60 deliveries killed -9 with 3 MiB free: each next open ran, $(df -k --output=avail "$KL" | tail -1) KiB left; log: $(du -k "$KL"/st/mboxlist/log.* | awk '{print $1}' | tr '\n' ' ')KiB"
umount "$KL"

# Out of inodes with space left: said so, not only "No space left on device", which sent the
# administrator to df -h, showing room (helper-158).
IN=$W/in; mkdir -p "$IN" && mount -t tmpfs -o size=64m,nr_inodes=400 tmpfs "$IN" || fail "mount a tmpfs of 400 inodes"
"$SM" init --store "$IN/st" >/dev/null || fail "init for the inode case"
"$SM" restore --store "$IN/st" -f "$W/big.sm" >/dev/null 2>"$W/in.err" && fail "the restore fitted in 400 inodes"
grep -q "No space left on device: no free inodes on its filesystem (df -i" "$W/in.err" || fail "inodes not named: $(cat "$W/in.err")"
umount "$IN"

# A region page with nothing behind it (here its file cut short under the running restore; a
# filesystem filled from outside does the same when a region grows): one line and 74, not a bare
# "Bus error", exit 135 (helper-158).
"$SM" init --store "$W/bus" >/dev/null || fail "init for the SIGBUS case"
mkfifo "$W/fifo"
"$SM" restore --store "$W/bus" -f - <"$W/fifo" >/dev/null 2>"$W/bus.err" & rp=$!
exec 3>"$W/fifo"
head -c 4096 "$W/big.sm" >&3
for _ in $(seq 1000); do grep -q "__db.001" "/proc/$rp/maps" 2>/dev/null && break; sleep 0.01; done  # until it maps the region
grep -q "__db.001" "/proc/$rp/maps" || fail "the restore never mapped its environment's region"
truncate -s 0 "$W/bus/mboxlist/__db.001"
tail -c +4097 "$W/big.sm" >&3 2>/dev/null
exec 3>&-
wait $rp; bus=$?
echo "a region cut short under a restore: exit $bus: $(cat "$W/bus.err")"
[ $bus = 74 ] || fail "SIGBUS: exit $bus, not 74"
grep -q "has no storage behind it (SIGBUS)" "$W/bus.err" || fail "SIGBUS not said: $(cat "$W/bus.err")"
echo "full_disk_test: ok"
