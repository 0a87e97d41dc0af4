#!/usr/bin/env bash
# csvfs-lab hygiene (issue 15, docs/lab.md): a lab's node namespaces do not pin
# mounts the lab did not make (a standalone csvfs unmounted on the host ends,
# its MMP released, while a lab is up), and `down` leaves a clean volume
# quickly: participants unmount first, the coordinator last, all before
# corosync stops; a daemon that has to be killed is named.
. "$(dirname "$0")/../lib.sh"

LAB="$BIN/csvfs-lab"
export CSVFS_LAB=${CSVFS_TEST_LAB:-hygiene}   # our own instance (see lab_cluster.sh)
unset CSVFS_BIN CSVFS_LAB_DAEMON_OPTS CSVFS_LAB_STOP_TIMEOUT
t_start=$(date +%s)

skip() { ok "lab_hygiene skipped: $* # SKIP"; exit 0; }
[ "$(id -u)" -eq 0 ] || skip "needs root"
for c in corosync corosync-quorumtool ip nsenter unshare fusermount3 e2fsck debugfs; do
  command -v "$c" >/dev/null 2>&1 || skip "$c not installed (make deps)"
done
for b in csvfs-lab csvfs mkfs.csvfs csvctl; do
  [ -x "$BIN/$b" ] || { not_ok "$BIN/$b missing (make)"; finish; exit; }
done

"$LAB" down >/dev/null 2>&1 || true     # a killed earlier run's lab
on_exit "'$LAB' down >/dev/null 2>&1"
S=$(scratch_dir)
LUN=$S/lun.img
V=/ClusterStorage/Volume1

# alive PID — the process runs (a zombie does not count).
alive() { [ -d "/proc/$1" ] && [ "$(awk '{sub(/.*\) /, ""); print $1}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
coordinator() { "$LAB" exec "$1" -- "$BIN/csvctl" status --json 2>/dev/null | sed -n 's/.*"coordinator":"node\([0-9]*\)".*/\1/p'; }
ms() { date +%s%3N; }

# ---- a standalone csvfs on the host, then a lab -------------------------------------
SA=$S/sa.img SAM=$S/sa
truncate -s 64M "$SA" && "$BIN/mkfs.csvfs" -L standalone "$SA" >/dev/null
CSVFS_LOG=$S/sa.log mount_csvfs "$SA" "$SAM" || { not_ok "standalone mount on the host"; finish; exit; }
SA_PID=$CSVFS_PID
echo standalone >"$SAM/file" && sync

t0=$(date +%s)
"$LAB" up -n 3 --lun "$LUN" --size 256M >"$S/up.out" 2>&1; rc=$?
check_eq "up -n 3 with a standalone csvfs mounted on the host" 0 "$rc"
[ "$rc" -eq 0 ] || { sed 's/^/# /' "$S/up.out"; finish; exit; }
diag "up took $(($(date +%s) - t0)) s"
check "up says it detached the host's FUSE mount in the nodes" grep -q "detached host mounts.* $SAM\( \|$\)" "$S/up.out"
for k in 1 2 3; do
  check_fails "node$k does not see the standalone mount" "$LAB" exec "$k" -- grep -q " $SAM " /proc/self/mounts
done
check_eq "the only FUSE mount inside node1 is the lab's own volume" "$V" \
  "$("$LAB" exec 1 -- grep fuse /proc/self/mounts | awk '{print $2}' | tr '\n' ' ' | sed 's/ $//')"
check_fails "no nsfs mount inside node3 (no other namespace is pinned)" "$LAB" exec 3 -- grep -q ' nsfs ' /proc/self/mounts
mkdir -p "$S/late" && mount -t tmpfs hygienelate "$S/late" && on_exit "umount '$S/late'"
check_fails "a host mount made after up does not reach the nodes" "$LAB" exec 2 -- grep -q hygienelate /proc/self/mounts

# Unmount the standalone on the host: its daemon must end and release MMP.
t0=$(ms)
fusermount3 -u "$SAM"
# (Without the fix it runs until the lab is down: each node holds a copy.)
check "the standalone daemon exits within 10 s of its unmount on the host" \
  wait_until 10 sh -c "! [ -d /proc/$SA_PID ] || grep -q ') Z ' /proc/$SA_PID/stat"
diag "standalone daemon gone $(( $(ms) - t0 )) ms after the unmount; its log:"
tail -n 2 "$S/sa.log" | sed 's/^/#   /'
umount_csvfs "$SAM"        # reaps it: exit status 0, no sanitizer report
fsck_clean "$SA" "$S/sa.fsck"; rc=$?
check_eq "e2fsck -fn of the standalone image is clean (MMP released)" 0 "$rc"
[ "$rc" -eq 0 ] || sed 's/^/# /' "$S/sa.fsck" | head -10

# ---- writes on every node, then a clean down ----------------------------------------
C=$(coordinator 1)
check "csvctl names a coordinator" test -n "$C"
C=${C:-1}
for k in 1 2 3; do
  "$LAB" exec "$k" -- sh -c "dd if=/dev/urandom of=$V/data$k bs=1M count=8 conv=fsync 2>/dev/null &&
    mkdir -p $V/dir$k && for i in 1 2 3 4 5 6 7 8; do echo \$i >$V/dir$k/f\$i; done &&
    dd if=/dev/urandom of=$V/nosync$k bs=64k count=16 2>/dev/null" || not_ok "writes on node$k"
done
sums=$(for k in 1 2 3; do "$LAB" exec "$k" -- md5sum "$V/data$k" "$V/nosync$k" | awk '{print $1}'; done)
t0=$(ms)
"$LAB" down --save-logs "$S/logs" >"$S/down.out" 2>&1; rc=$?
dt=$(( $(ms) - t0 ))
check_eq "down after writes on every node" 0 "$rc"
diag "down took $dt ms (coordinator node$C)"
check "down took less than 20 s" test "$dt" -lt 20000
check_fails "down had to kill no daemon" grep -q "had to kill" "$S/down.out"
grep "had to kill" "$S/down.out" | sed 's/^/# /'
e2fsck -fn "$LUN" >"$S/fsck.out" 2>&1; rc=$?
check_eq "e2fsck -fn of the LUN is clean after down" 0 "$rc"
check_fails "... with no MMP complaint and no journal to recover" grep -Eqi "mmp|needs.recovery|recover" "$S/fsck.out"
[ "$rc" -eq 0 ] || sed 's/^/# /' "$S/fsck.out" | head -10
check_fails "the superblock does not say needs_recovery" sh -c "dumpe2fs -h '$LUN' 2>/dev/null | grep -q needs_recovery"
check_eq "the data every node wrote is on the LUN" "$sums" \
  "$(for k in 1 2 3; do for f in data$k nosync$k; do debugfs -R "cat /$f" "$LUN" 2>/dev/null | md5sum | awk '{print $1}'; done; done)"
check_eq "no takeover during down: one node ever became coordinator" 1 \
  "$(cat "$S"/logs/node*-csvfs.log | grep -c 'this node is now the coordinator')"
last=$(for k in 1 2 3; do sed -n "s|^\([^ ]*\) .*unmounted $V\$|\1 $k|p" "$S/logs/node$k-csvfs.log" | tail -n 1; done | sort | tail -n 1)
check_eq "every node logged a clean unmount, the coordinator last" "3 $C" \
  "$(cat "$S"/logs/node*-csvfs.log | grep -c "unmounted $V\$") ${last##* }"

# ---- a participant that cannot unmount: named, killed; the volume stays clean --------
CSVFS_LAB_STOP_TIMEOUT=3 "$LAB" up -n 3 --lun "$LUN" >"$S/up2.out" 2>&1; rc=$?
check_eq "up again on the same LUN" 0 "$rc"
[ "$rc" -eq 0 ] || { sed 's/^/# /' "$S/up2.out"; finish; exit; }
C=$(coordinator 1); C=${C:-1}
P=$(( C % 3 + 1 ))
"$LAB" exec "$P" -- sh -c "cd $V && exec sleep 60" </dev/null >/dev/null 2>&1 &
busy=$!
on_exit "kill $busy"
check "node$P's volume is held busy (a process has its working directory there)" \
  wait_until 5 sh -c "readlink /proc/$busy/cwd | grep -q '^$V'"
"$LAB" exec "$C" -- sh -c "echo after >$V/after && sync" || not_ok "write on the coordinator"
t0=$(ms)
CSVFS_LAB_STOP_TIMEOUT=3 "$LAB" down >"$S/down2.out" 2>&1; rc=$?
dt=$(( $(ms) - t0 ))
diag "down with a busy participant took $dt ms"
check_eq "down with a busy participant" 0 "$rc"
check "down says node$P's daemon had to be killed" grep -q "^csvfs-lab: node$P: .*had to kill it" "$S/down2.out"
check_fails "... and no other daemon" grep -q "^csvfs-lab: node[^$P]: .*had to kill" "$S/down2.out"
sed 's/^/# /' "$S/down2.out"
kill "$busy" 2>/dev/null; wait "$busy" 2>/dev/null
fsck_clean "$LUN" "$S/fsck2.out"; rc=$?
check_eq "the coordinator, last, still left the volume clean" 0 "$rc"
[ "$rc" -eq 0 ] || sed 's/^/# /' "$S/fsck2.out" | head -10

diag "lab_hygiene took $(($(date +%s) - t_start)) s"
finish
