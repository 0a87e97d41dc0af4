#!/usr/bin/env bash
# The coordinator's own path to the LUN fails (issue 10; docs/cluster.md,
# "The coordinator's own path fails") on a 3-node csvfs-lab with a path per
# node (up --paths), real corosync, real mounts:
#  - under fio (verify=crc32c, O_DIRECT) on the coordinator and on a
#    participant, the coordinator's path fails: the role moves to a node
#    with a path, the old coordinator goes on as a redirected participant,
#    neither fio sees an error and both verify their data; the old
#    coordinator does not take the role back while its path is down, and is
#    direct again once it returns;
#  - every node's path fails under fio on a participant: no node
#    coordinates, every node says paused (csvctl status), the I/O waits; the
#    paths return: a coordinator again, fio finishes and verifies;
#  - the coordinator's path hangs (nothing answers) under fio on it and on a
#    participant: the path timeout makes it a path failure — the role
#    moves, neither fio sees an error — and once the path answers the
#    transfers given up on end and the node is direct again.
# Oracles: fio verify, csvctl status --json fields, the logs (one line per
# transition), and after lab down e2fsck -fn and the kernel's read-only view.
. "$(dirname "$0")/../lib.sh"

lab_test_begin coordpath cpath fio md5sum
# A participant's transfer its path does not answer in 2 s has failed.
export CSVFS_LAB_DAEMON_OPTS="$CSVFS_LAB_DAEMON_OPTS,path_timeout=2000"
[ -x "$BIN/csvfs-lunpath" ] || { not_ok "csvfs-lunpath missing (make)"; finish; exit; }
V=/ClusterStorage/Volume1
LUN=$S/lun.img

. "$(dirname "$0")/../lib_io.sh"
# role_io NODE — "ROLE STATE REASONS" of the node as it reports itself
role_io() {
  status_json "$1" | grep -o '"this_node":true,[^}]*' | head -1 |
    sed -n 's/.*"role":"\([a-z]*\)".*"io_state":"\([a-z]*\)","io_reasons":\[\([^]]*\)\].*/\1 \2 \3/p' | tr -d '"'
}
role_io_is() { [ "$(role_io "$1")" = "$2" ]; }
coord_is_not() { local c; c=$(coord_of "$1"); [ -n "$c" ] && [ "$c" != "$2" ]; }
coord_known() { [ -n "$(coord_of "$1")" ]; }
# paused_alone NODE — its own state paused, and it knows no coordinator
paused_alone() { local j; j=$(status_json "$1"); echo "$j" | grep -q '"coordinator":""' && echo "$j" | grep -q '"this_node":true,[^}]*"io_state":"paused"'; }
became() { grep -c "this node is now the coordinator" "$(nodelog "$1")"; }
# fio_start NODE FILE OUT RATE — random 64 KiB O_DIRECT writes over the 64 MiB of
# FILE at RATE, then a read-back checking every block's crc32c; its pid in FIO_PID.
fio_start() {
  on "$1" fio --name=w --filename="$V/$2" --size=64M --rw=randwrite --bs=64k --direct=1 \
    --ioengine=libaio --iodepth=8 --rate="$4" --verify=crc32c --verify_state_save=0 --verify_fatal=1 \
    --do_verify=1 --end_fsync=1 --output="$3" >/dev/null 2>&1 &
  FIO_PID=$!
}
# fio_ok RC OUT — fio exited 0, and its output has no error and no verify failure
fio_ok() { [ "$1" -eq 0 ] && grep -q 'err= 0' "$2" && ! grep -qi 'verify failed\|bad magic\|crc32c: verify' "$2"; }
# fio_checked WHAT RC OUT — the check that fio passed; its output shown when it did not
fio_checked() {
  check "$1" fio_ok "$2" "$3"
  [ "$2" -eq 0 ] || sed 's/^/#   /' "$3" | head -20
}

"$LAB" up -n 3 --lun "$LUN" --size 1G --paths >"$S/up.out" 2>&1; rc=$?
check_eq "lab up --paths: 3 nodes, each through its own LUN path" 0 "$rc"
[ "$rc" -eq 0 ] || { sed 's/^/# /' "$S/up.out"; finish; exit; }
check "a coordinator is known" wait_until 30 coord_known 1
C=$(coord_of 1); C=${C#node}
P=$(( C % 3 + 1 ))   # a participant
Q=$(( P % 3 + 1 )); [ "$Q" = "$C" ] && Q=$(( Q % 3 + 1 ))
diag "coordinator node$C, participants node$P and node$Q"

# ---- the coordinator's path fails under load ------------------------------------------
# Each file is allocated and journaled first (as a VM disk is); fio's writes
# then fill unwritten blocks: committed in the coordinator's engine, not yet
# in its journal when the path fails — what must not be lost.
sh_on "$C" "fallocate -l 64M $V/coord.img && sync $V/coord.img"
sh_on "$P" "fallocate -l 64M $V/part.img && sync $V/part.img"
fio_start "$C" coord.img "$S/fio_coord.out" 8m; fio_c=$FIO_PID   # 8 s of writes
fio_start "$P" part.img "$S/fio_part.out" 8m; fio_p=$FIO_PID
sleep 1.5
"$LAB" fault "$C" path fail >/dev/null
check "the role moves from node$C to a node with a path" wait_until 30 coord_is_not "$P" "node$C"
K=$(coord_of "$P"); K=${K#node}
diag "coordinator now node$K"
check "node$C: a participant, redirected (path-failure)" \
  wait_until 10 role_io_is "$C" "participant redirected path-failure"
status_json "$C" >"$S/status-old-coord.json"
check "node$C's status names its last path error" \
  grep -q '"io_last_path_error":{"device":"/run/csvfs-path/lun","errno":5' "$S/status-old-coord.json"
check "node$K, the new coordinator, reports itself direct" io_is "$K" "direct "
wait "$fio_c"; rc_c=$?
wait "$fio_p"; rc_p=$?
fio_checked "fio on node$C (the old coordinator) across the loss of its path and role: no error, data verified" \
  "$rc_c" "$S/fio_coord.out"
fio_checked "fio on node$P (a participant) meanwhile: no error, data verified" "$rc_p" "$S/fio_part.out"
check "one log line: node$C gave up the role for its failed path" \
  grep -q "this node gave up the coordinator role (epoch [0-9]*) for its failed path" "$(nodelog "$C")"
check "... after one naming the failure" \
  grep -q "this coordinator's own path to the LUN failed: it writes nothing more" "$(nodelog "$C")"
check "... and one for its I/O state" \
  grep -q "I/O state: direct -> redirected (path-failure): path failure on /run/csvfs-path/lun" "$(nodelog "$C")"
check "node$K took over (journal replayed)" grep -q "this node is now the coordinator" "$(nodelog "$K")"
# While redirected, the old coordinator writes a new file (allocate, write,
# commit through node$K) and reads back what node$Q reads.
sh_on "$C" "head -c 3000000 /dev/urandom > $V/after.bin && sync $V/after.bin"
sum_after=$(md5_on "$C" after.bin)
check "node$C writes a new file through node$K; node$Q reads the same" \
  sh -c "[ -n '$sum_after' ] && [ '$sum_after' = \"\$(\"$LAB\" exec $Q -- sh -c 'md5sum < $V/after.bin' | cut -d' ' -f1)\" ]"
sum_coord=$(md5_on "$Q" coord.img)
check_eq "node$C reads coord.img (redirected) as node$Q does" "$sum_coord" "$(md5_on "$C" coord.img)"
check_eq "node$C did not take the role back with its path down" 1 "$(became "$C")"
"$LAB" fault "$C" path ok >/dev/null
check "node$C: direct again once its path works" wait_until 20 io_is "$C" "direct "
check_eq "... and reads coord.img directly the same" "$sum_coord" "$(md5_on "$C" coord.img)"

# ---- every path fails: the volume pauses, then resumes ----------------------------------
sh_on "$P" "fallocate -l 64M $V/pause.img && sync $V/pause.img"
K=$(coord_of "$P"); K=${K#node}
fio_start "$P" pause.img "$S/fio_pause.out" 4m; fio_pp=$FIO_PID   # 16 s of writes
sleep 1
became_before="$(became 1) $(became 2) $(became 3)"
# the coordinator's path last: when it gives the role up every other path has failed
# (faulted first, an idle node could take the role before its own fault came)
for k in 1 2 3; do [ "$k" = "$K" ] || "$LAB" fault "$k" path fail >/dev/null; done
"$LAB" fault "$K" path fail >/dev/null
check "node$K, the coordinator, gives the role up" \
  wait_until 20 grep -q "this node gave up the coordinator role (epoch [0-9]*) for its failed path" "$(nodelog "$K")"
check "fio on node$P is waiting, not failed" kill -0 "$fio_pp"
for k in 1 2 3; do
  check "node$k: its own status says paused, no coordinator" wait_until 20 paused_alone "$k"
done
on "$P" "$CTL" status >"$S/status-paused.txt" 2>&1
check "csvctl status (text) on node$P shows it paused" grep -qE "^  node$P .* paused" "$S/status-paused.txt"
sed 's/^/#   /' "$S/status-paused.txt"
check "one log line on node$P: the volume is paused" \
  grep -q "is paused: no node has taken the coordinator role for 2000 ms" "$(nodelog "$P")"
sleep 2
check "still no coordinator while no node has a path" paused_alone "$Q"
# an idle node (no I/O of its own failed yet) probes its path before it takes the role
check_eq "no node took the coordinator role while its path was down" \
  "$became_before" "$(became 1) $(became 2) $(became 3)"
for k in 1 2 3; do "$LAB" fault "$k" path ok >/dev/null; done
check "paths back: a coordinator again" wait_until 60 coord_known "$P"
diag "coordinator after the pause: $(coord_of "$P")"
check "one log line on node$P: the volume resumes" wait_until 10 grep -q "resumes: .* is the coordinator" "$(nodelog "$P")"
wait "$fio_pp"; rc=$?
fio_checked "fio on node$P across the pause: no error, data verified" "$rc" "$S/fio_pause.out"
for k in 1 2 3; do
  check "node$k: not paused, direct again" wait_until 30 io_is "$k" "direct "
done

# ---- the coordinator's path hangs under load --------------------------------------------
# A hung path is a failed path: every LUN transfer and flush of the
# coordinator — data, metadata, journal — has the path timeout (2 s here),
# so none of its threads waits on the hung path for longer; it gives the role
# up, and the I/O that waited on it goes on at the new coordinator.
H=$(coord_of "$P"); H=${H#node}
HP=$(( H % 3 + 1 ))
sh_on "$H" "fallocate -l 64M $V/hangc.img && sync $V/hangc.img"
sh_on "$HP" "fallocate -l 64M $V/hangp.img && sync $V/hangp.img"
gave_up_before=$(grep -c "for its failed path" "$(nodelog "$H")")
fio_start "$H" hangc.img "$S/fio_hangc.out" 8m; fio_hc=$FIO_PID
fio_start "$HP" hangp.img "$S/fio_hangp.out" 8m; fio_hp=$FIO_PID
sleep 1.5
"$LAB" fault "$H" path hang >/dev/null
check "the role moves from node$H, whose path hangs, to a node with a path" \
  wait_until 40 coord_is_not "$HP" "node$H"
diag "coordinator now $(coord_of "$HP")"
check "node$H: a participant, redirected (path-failure)" \
  wait_until 20 role_io_is "$H" "participant redirected path-failure"
check "node$H's last path error is the path timeout (ETIMEDOUT)" \
  sh -c "\"$LAB\" exec $H -- \"$BIN/csvctl\" status --json | grep -q '\"errno\":110,\"cause\":\"Connection timed out\"'"
check "node$H's log names a transfer that did not complete within the path timeout" \
  grep -q "did not complete within 2000 ms (path timeout)" "$(nodelog "$H")"
check_eq "one more log line: node$H gave up the role for its failed path" \
  $((gave_up_before + 1)) "$(grep -c "for its failed path" "$(nodelog "$H")")"
# Bounded: were the hang not detected, fio would wait for the path (so it
# is let answer, and the checks above and below fail).
fio_done() { ! kill -0 "$fio_hc" 2>/dev/null && ! kill -0 "$fio_hp" 2>/dev/null; }
if ! wait_until 120 fio_done; then
  not_ok "fio on node$H and node$HP did not finish while the path hung: the path answers again"
  "$LAB" fault "$H" path ok >/dev/null
fi
wait "$fio_hc"; rc_c=$?
wait "$fio_hp"; rc_p=$?
fio_checked "fio on node$H (the coordinator whose path hung): no error, data verified" \
  "$rc_c" "$S/fio_hangc.out"
fio_checked "fio on node$HP (a participant) meanwhile: no error, data verified" "$rc_p" "$S/fio_hangp.out"
sum_hangc=$(md5_on "$HP" hangc.img)
check_eq "node$H reads hangc.img (redirected) as node$HP does" "$sum_hangc" "$(md5_on "$H" hangc.img)"
"$LAB" fault "$H" path ok >/dev/null
check "node$H: direct again once its path answers" wait_until 30 io_is "$H" "direct "
check "node$H's log: the transfers given up on ended once the path answered" \
  grep -q "given up after the path timeout has ended" "$(nodelog "$H")"
sum_hangp=$(md5_on "$H" hangp.img)

# ---- unmounted: independent oracles -----------------------------------------------------
sum_part=$(md5_on "$P" part.img)
sum_pause=$(md5_on "$Q" pause.img)
lab_down_checked "$LUN"
kernel_ro_view "$LUN" \
  "kernel ext4 (read-only) reads coord.img as the nodes did" "$sum_coord" coord.img \
  "... part.img" "$sum_part" part.img \
  "... the file the old coordinator wrote redirected" "$sum_after" after.bin \
  "... the file written across the pause" "$sum_pause" pause.img \
  "... the file the coordinator wrote while its path hung" "$sum_hangc" hangc.img \
  "... the file a participant wrote meanwhile" "$sum_hangp" hangp.img
finish
