#!/usr/bin/env bash
# Redirected I/O (design.md §7, issue 10) on a 3-node csvfs-lab with a path
# per node (up --paths, docs/lab.md "Path faults"), real corosync, real
# mounts: a participant's path fails under fio (verify=crc32c, O_DIRECT):
# no application error, data verified, csvctl status says redirected
# (path-failure) with the last path error; writes into holes and fsync work
# while the path is down; the path comes back: direct again by itself; the
# same with a path that hangs (the path timeout, 2 s here, detects it). A
# user redirect (csvctl redirect on --for 5s) ends by itself and survives a
# coordinator move; every node's state is visible from every node, and a
# redirect can be asked for another node or --all (through the coordinator);
# a qcow2 disk written by qemu-img bench / qemu-io with cache=none across a
# failed and a hung path reads back and passes qemu-img check; a node whose
# path is down is never made coordinator.
# Bad requests get clear errors. Then every node unmounts, e2fsck -fn is clean and the
# kernel's read-only view holds the data written while redirected.
. "$(dirname "$0")/../lib.sh"

LAB="$BIN/csvfs-lab"
export CSVFS_LAB=${CSVFS_TEST_LAB:-redir}   # this test's own lab
unset CSVFS_BIN CSVFS_LAB_TOKEN
# A path that does not answer a transfer in 2 s has failed (default 5 s).
export CSVFS_LAB_DAEMON_OPTS="path_timeout=2000"
V=/ClusterStorage/Volume1

skip() { ok "redirect skipped: $* # SKIP"; exit 0; }
[ "$(id -u)" -eq 0 ] || skip "needs root"
for c in corosync ip nsenter unshare fio e2fsck qemu-img qemu-io; do
  command -v "$c" >/dev/null 2>&1 || skip "$c not installed (make deps)"
done
[ -x "$LAB" ] && [ -x "$BIN/csvfs-lunpath" ] || { not_ok "$LAB or csvfs-lunpath missing (make)"; finish; exit; }

S=$(scratch_dir)
LUN=$S/lun.img
truncate -s 1G "$LUN"
"$LAB" down >/dev/null 2>&1 || true
on_exit "'$LAB' down --save-logs '$S/logs' >/dev/null 2>&1; mkdir -p '$TOP/$BUILD/test-logs/redirect'; cp -a '$S/logs/.' '$TOP/$BUILD/test-logs/redirect/' 2>/dev/null"

. "$(dirname "$0")/../lib_io.sh"
# seen_io VIEWER NODE — "STATE REASONS" of nodeNODE as VIEWER's status shows it
seen_io() {
  status_json "$1" | grep -o "{\"name\":\"node$2\"[^}]*" | head -1 |
    sed -n 's/.*"io_state":"\([a-z]*\)","io_reasons":\[\([^]]*\)\].*/\1 \2/p' | tr -d '"'
}
seen_is() { [ "$(seen_io "$1" "$2")" = "$3" ]; }

"$LAB" up -n 3 --lun "$LUN" --paths >"$S/up.out" 2>&1; rc=$?
check_eq "lab up --paths: 3 nodes, each through its own LUN path" 0 "$rc"
[ "$rc" -eq 0 ] || { sed 's/^/# /' "$S/up.out"; finish; exit; }
check "a coordinator is known" wait_until 30 sh -c "\"$LAB\" exec 1 -- \"$BIN/csvctl\" status --json 2>/dev/null | grep -q '\"coordinator\":\"node'"
C=$(status_json 1 | sed -n 's/.*"coordinator":"node\([0-9]\)".*/\1/p')
P=$(( C % 3 + 1 ))   # a participant
Q=$(( P % 3 + 1 )); [ "$Q" = "$C" ] && Q=$(( Q % 3 + 1 ))   # the other participant
diag "coordinator node$C, participant under test node$P, other participant node$Q"
check_eq "node$P starts direct" "direct " "$(my_io "$P")"

# ---- the path fails under fio; the application sees nothing ---------------------------
# 64 MiB of random 64 KiB O_DIRECT writes at 16 MiB/s (about 4 s), then a
# read-back that checks every block's crc32c; the path fails 1.5 s in and
# comes back 3 s later, so writes, and perhaps verify reads, cross both switches.
on "$P" fallocate -l 64M "$V/laidout.img"
on "$P" fio --name=laidout --filename="$V/laidout.img" --size=64M --rw=randwrite --bs=64k \
  --direct=1 --ioengine=libaio --iodepth=8 --rate=16m --verify=crc32c --verify_state_save=0 --verify_fatal=1 \
  --do_verify=1 --output="$S/fio_laidout.out" >/dev/null 2>&1 &
fio_pid=$!
sleep 1.5
"$LAB" fault "$P" path fail >/dev/null
t_fail=$(date +%s%3N)
check "node$P: redirected (path-failure) soon after its path fails" wait_until 10 io_is "$P" "redirected path-failure"
diag "status said redirected $(( $(date +%s%3N) - t_fail )) ms after the fault"
status_json "$P" >"$S/status-redirected.json"
check "the status names the last path error (device, errno 5, since)" \
  grep -q '"io_last_path_error":{"device":"/run/csvfs-path/lun","errno":5,"cause":"Input/output error"' "$S/status-redirected.json"
on "$P" "$BIN/csvctl" status >"$S/status-redirected.txt" 2>&1
check "csvctl status (text) shows node$P redirected (path-failure) with the path error" \
  grep -qE "^  node$P +up +yes +redirected \(path-failure\) since .*last path error /run/csvfs-path/lun: Input/output error" "$S/status-redirected.txt"
sed 's/^/#   /' "$S/status-redirected.txt"
check_eq "the other participant stays direct" "direct " "$(my_io "$Q")"
sleep 3
"$LAB" fault "$P" path ok >/dev/null
t_ok=$(date +%s%3N)
check "node$P: direct again by itself once its path works" wait_until 20 io_is "$P" "direct "
diag "direct again $(( $(date +%s%3N) - t_ok )) ms after the path came back"
wait "$fio_pid"; rc=$?
check_eq "fio (randwrite + crc32c verify, O_DIRECT) across the failure: no error" 0 "$rc"
[ "$rc" -eq 0 ] || sed 's/^/#   /' "$S/fio_laidout.out" | head -20
check "fio reports err=0 and no verify failure" \
  sh -c "grep -q 'err= 0' '$S/fio_laidout.out' && ! grep -qi 'verify failed\|bad magic\|crc32c: verify' '$S/fio_laidout.out'"
check "one log line per transition: to redirected, naming the path and the cause" \
  grep -q "I/O state: direct -> redirected (path-failure): path failure on /run/csvfs-path/lun: Input/output error" "$(nodelog "$P")"
check "... and back to direct after the probes" \
  grep -q "I/O state: redirected (path-failure) -> direct: path /run/csvfs-path/lun works again" "$(nodelog "$P")"

# ---- everything while the path is down: holes, fsync, reads, another node's view -------
"$LAB" fault "$P" path fail >/dev/null
on "$P" fio --name=holes --filename="$V/holes.img" --size=32M --rw=write --bs=256k --direct=1 \
  --ioengine=libaio --iodepth=4 --verify=crc32c --verify_state_save=0 --verify_fatal=1 --do_verify=1 --end_fsync=1 \
  --output="$S/fio_holes.out" >/dev/null 2>&1; rc=$?
check_eq "with the path down: fio writes a new file (allocate, write, commit), fsyncs, verifies" 0 "$rc"
[ "$rc" -eq 0 ] || sed 's/^/#   /' "$S/fio_holes.out" | head -20
sh_on "$P" "head -c 3000000 /dev/urandom > $V/small.bin && sync $V/small.bin"
sum_small=$(md5_on "$P" small.bin)
check "with the path down: a buffered unaligned write + fsync, read back the same on node$Q" \
  sh -c "[ -n '$sum_small' ] && [ '$sum_small' = \"\$(\"$LAB\" exec $Q -- sh -c 'md5sum < $V/small.bin' | cut -d' ' -f1)\" ]"
sum_holes=$(md5_on "$Q" holes.img)
check_eq "node$P reads holes.img (redirected) as node$Q does (direct)" "$sum_holes" "$(md5_on "$P" holes.img)"
check "node$P is still redirected (path-failure)" io_is "$P" "redirected path-failure"
# Every node's state is visible from every node (OP_IO_STATE through the coordinator).
check "node$Q's status shows node$P redirected (path-failure)" \
  wait_until 10 seen_is "$Q" "$P" "redirected path-failure"
check "... and so does the coordinator's (node$C)" seen_is "$C" "$P" "redirected path-failure"
check "node$Q's status gives node$P's last path error (its device, errno)" \
  sh -c "\"$LAB\" exec $Q -- \"$BIN/csvctl\" status --json | grep -o '{\"name\":\"node$P\".*' |
    grep -q '\"io_last_path_error\":{\"device\":\"[^\"][^\"]*\",\"errno\":[1-9]'"
check "node$Q's human status has node$P's line with its reason" \
  sh -c "\"$LAB\" exec $Q -- \"$BIN/csvctl\" status | grep -q '^  node$P .*redirected (path-failure)'"
check_eq "node$P's status shows the coordinator direct" "direct " "$(seen_io "$P" "$C")"
"$LAB" fault "$P" path ok >/dev/null
check "node$P: direct again" wait_until 20 io_is "$P" "direct "
check "node$Q's status shows node$P direct again" wait_until 10 seen_is "$Q" "$P" "direct "
check_eq "... and reads the same data directly" "$sum_holes" "$(md5_on "$P" holes.img)"

# ---- a path that hangs instead of failing ------------------------------------------------
"$LAB" fault "$P" path hang >/dev/null
t_hang=$(date +%s%3N)
on "$P" fio --name=hang --filename="$V/hang.img" --size=16M --rw=randwrite --bs=64k --direct=1 \
  --ioengine=libaio --iodepth=4 --verify=crc32c --verify_state_save=0 --verify_fatal=1 --do_verify=1 --end_fsync=1 \
  --output="$S/fio_hang.out" >/dev/null 2>&1; rc=$?
check_eq "with the path hung: fio writes, fsyncs and verifies a new file, no error" 0 "$rc"
[ "$rc" -eq 0 ] || sed 's/^/#   /' "$S/fio_hang.out" | head -20
diag "fio done $(( $(date +%s%3N) - t_hang )) ms after the hang began"
check "node$P: redirected (path-failure) by the path timeout" io_is "$P" "redirected path-failure"
check "the last path error is the timeout (ETIMEDOUT)" \
  sh -c "\"$LAB\" exec $P -- \"$BIN/csvctl\" status --json | grep -q '\"errno\":110,\"cause\":\"Connection timed out\"'"
check "the log names the transfer that did not complete within the path timeout" \
  grep -q "did not complete within 2000 ms (path timeout)" "$(nodelog "$P")"
sum_hang=$(md5_on "$Q" hang.img)
check_eq "node$P reads hang.img (redirected) as node$Q does" "$sum_hang" "$(md5_on "$P" hang.img)"
"$LAB" fault "$P" path ok >/dev/null
check "node$P: direct again once the hung path answers" wait_until 20 io_is "$P" "direct "
# The FUSE threads gave up on the hung transfers (io_uring requests) and went
# on; the path ended them when it answered, and the reaper released them.
check "the log says a given-up transfer ended once the path answered" \
  grep -q "given up after the path timeout has ended" "$(nodelog "$P")"
check "transfers with a path timeout ran on io_uring (no fallback to worker threads)" \
  sh -c "! grep -q 'io_uring unusable' '$(nodelog "$P")'"
check_eq "... and reads hang.img directly the same" "$sum_hang" "$(md5_on "$P" hang.img)"

# ---- a user's redirect is a lease ----------------------------------------------------------
out=$(on "$P" "$BIN/csvctl" redirect on --for 5s 2>&1); rc=$?
check_eq "csvctl redirect on --for 5s succeeds ($out)" 0 "$rc"
check_eq "node$P: redirected (user-request)" "redirected user-request" "$(my_io "$P")"
check "the status shows the lease's end" sh -c "\"$LAB\" exec $P -- \"$BIN/csvctl\" status --json | grep -q '\"io_redirect_until\":\"20'"
sh_on "$P" "head -c 1048576 /dev/urandom > $V/user.bin && sync $V/user.bin"
check_eq "writes under a user redirect land (read on node$Q)" "$(md5_on "$P" user.bin)" "$(md5_on "$Q" user.bin)"
check "the lease ends by itself: direct within 10 s" wait_until 10 io_is "$P" "direct "
check "... and says so in the log" grep -q "redirected (user-request) -> direct: user request expired" "$(nodelog "$P")"
on "$P" "$BIN/csvctl" redirect on --for 1h >/dev/null 2>&1
check_eq "redirect on --for 1h, then off: direct" "direct " "$(on "$P" "$BIN/csvctl" redirect off >/dev/null 2>&1; my_io "$P")"

# ---- a redirect survives a coordinator move ---------------------------------------------
on "$P" "$BIN/csvctl" redirect on --for 2m >/dev/null 2>&1
on "$C" "$BIN/csvctl" move "node$Q" >"$S/move.out" 2>&1
check "csvctl move hands the role to node$Q" \
  wait_until 30 sh -c "\"$LAB\" exec $P -- \"$BIN/csvctl\" status --json 2>/dev/null | grep -q '\"coordinator\":\"node$Q\"'"
check_eq "node$P is still redirected (user-request) after the move" "redirected user-request" "$(my_io "$P")"
sh_on "$P" "head -c 2000000 /dev/urandom > $V/moved.bin && sync $V/moved.bin"
sum_moved=$(md5_on "$P" moved.bin)
check_eq "its writes go through the new coordinator (read on node$C)" "$sum_moved" "$(md5_on "$C" moved.bin)"
on "$P" "$BIN/csvctl" redirect off >/dev/null 2>&1
check_eq "redirect off: direct" "direct " "$(my_io "$P")"

# ---- no coordinator without a path ----------------------------------------------------------
K=$Q   # the coordinator since the move
"$LAB" fault "$P" path fail >/dev/null
sh_on "$P" "cat $V/small.bin >/dev/null"   # its next transfer finds the path gone
check_eq "node$P: redirected (path-failure)" "redirected path-failure" "$(my_io "$P")"
on "$K" "$BIN/csvctl" move "node$P" >"$S/move2.out" 2>&1
check "node$K steps down to hand the role to node$P" wait_until 20 grep -q "stepped down as coordinator" "$(nodelog "$K")"
check "node$P, whose path is down, does not take it: another node does" \
  wait_until 40 sh -c "c=\$(\"$LAB\" exec $C -- \"$BIN/csvctl\" status --json 2>/dev/null | sed -n 's/.*\"coordinator\":\"\([^\"]*\)\".*/\\1/p'); [ -n \"\$c\" ] && [ \"\$c\" != node$P ]"
diag "coordinator now: $(coord_of "$C")"
check "node$P never became coordinator" sh -c "! grep -q 'this node is now the coordinator' '$(nodelog "$P")'"
sh_on "$P" "head -c 1048576 /dev/urandom > $V/nopath.bin && sync $V/nopath.bin"
sum_nopath=$(md5_on "$P" nopath.bin)
check_eq "node$P goes on writing through the new coordinator" "$sum_nopath" "$(md5_on "$C" nopath.bin)"
"$LAB" fault "$P" path ok >/dev/null
check "node$P: direct again" wait_until 20 io_is "$P" "direct "

# ---- a redirect for other nodes, through the coordinator -----------------------------------
out=$(on "$P" "$BIN/csvctl" redirect on "node$Q" --for 1m 2>&1); rc=$?
check_eq "csvctl redirect on node$Q --for 1m, run on node$P, succeeds ($out)" 0 "$rc"
check "node$Q: redirected (user-request), as asked from node$P" wait_until 10 io_is "$Q" "redirected user-request"
check_eq "... node$P itself stays direct" "direct " "$(my_io "$P")"
check "node$Q shows its lease's end" \
  sh -c "\"$LAB\" exec $Q -- \"$BIN/csvctl\" status --json | grep -o '\"this_node\":true,.*' | grep -q '\"io_redirect_until\":\"20'"
sh_on "$Q" "head -c 1048576 /dev/urandom > $V/asked.bin && sync $V/asked.bin"
check_eq "node$Q's writes under that redirect land (read on node$P)" "$(md5_on "$Q" asked.bin)" "$(md5_on "$P" asked.bin)"
out=$(on "$P" "$BIN/csvctl" redirect off "node$Q" 2>&1); rc=$?
check_eq "csvctl redirect off node$Q, run on node$P, succeeds ($out)" 0 "$rc"
check "node$Q: direct again" wait_until 10 io_is "$Q" "direct "
CUR=$(coord_of "$P")
out=$(on "$P" "$BIN/csvctl" redirect on --all --for 1m 2>&1); rc=$?
check_eq "csvctl redirect on --all succeeds ($out)" 0 "$rc"
for k in 1 2 3; do
  # the coordinator's own data stays direct; its lease applies once it is not
  want="redirected user-request"; [ "node$k" = "$CUR" ] && want="direct user-request"
  check "--all: node$k is '$want'" wait_until 10 io_is "$k" "$want"
done
on "$P" "$BIN/csvctl" redirect off --all >/dev/null 2>&1
for k in 1 2 3; do
  check "redirect off --all: node$k direct" wait_until 10 io_is "$k" "direct "
done

# ---- a qcow2 VM disk (qemu, cache=none) on a participant whose path fails, then hangs ----
# Eight passes of qemu-img bench, each writing 32 MiB (64 KiB requests, 8 in
# flight, O_DIRECT) at its own offset with its own byte, qcow2 allocating as it
# goes: two direct, two with the path failed, two with it hung, two as it
# comes back. No timing: the faults change between passes.
QC=$V/vm.qcow2
on "$P" qemu-img create -q -f qcow2 "$QC" 256M
qerr=0
qpass() {
  local k
  for k in "$@"; do
    on "$P" qemu-img bench -q -w -t none -f qcow2 -c 512 -d 8 -s 65536 -S 65536 \
      -o $(( k * 33554432 )) --pattern=$(( k + 1 )) "$QC" >"$S/qbench$k.out" 2>&1 || qerr=$(( qerr + 1 ))
    grep -qiE 'fail|error' "$S/qbench$k.out" && qerr=$(( qerr + 1 ))
  done
}
qpass 0 1
"$LAB" fault "$P" path fail >/dev/null
qpass 2 3
check "qemu: node$P redirected (path-failure) under the failed path" io_is "$P" "redirected path-failure"
"$LAB" fault "$P" path ok >/dev/null
check "qemu: node$P direct again" wait_until 20 io_is "$P" "direct "
"$LAB" fault "$P" path hang >/dev/null
qpass 4 5
check "qemu: node$P redirected (path-failure) under the hung path" io_is "$P" "redirected path-failure"
"$LAB" fault "$P" path ok >/dev/null
qpass 6 7
check_eq "qemu-img bench -t none: 8 passes, no failed request, across a failed and a hung path" 0 "$qerr"
[ "$qerr" -eq 0 ] || cat "$S"/qbench*.out | head -20 | sed 's/^/#   /'
check "qemu: node$P direct again after the hang" wait_until 20 io_is "$P" "direct "
qargs=()
for k in 0 1 2 3 4 5 6 7; do qargs+=(-c "read -P $(( k + 1 )) $(( k * 33554432 )) 33554432"); done
on "$P" qemu-io -t none -f qcow2 "${qargs[@]}" "$QC" >"$S/qio.out" 2>&1; rc=$?
n=$(grep -cE '^read [0-9]+/[0-9]+ bytes' "$S/qio.out")
check "qemu-io -t none on node$P reads every pass's byte back (exit $rc, $n of 8 reads)" \
  sh -c "[ $rc -eq 0 ] && [ $n -eq 8 ] && ! grep -qiE 'fail|error|mismatch' '$S/qio.out'"
on "$Q" qemu-img check -f qcow2 "$QC" >"$S/qcheck.out" 2>&1; rc=$?
check_eq "qemu-img check on node$Q: the qcow2 image is clean" 0 "$rc"
[ "$rc" -eq 0 ] || sed 's/^/#   /' "$S/qcheck.out" | head -10

# refused CMD... — runs csvctl CMD on node P; its exit status, its output in $S/refused.out
refused() { on "$P" "$BIN/csvctl" "$@" >"$S/refused.out" 2>&1; }
refused redirect on --for 0; rc=$?
check "a zero duration is refused, naming it (exit $rc)" sh -c "[ $rc -eq 2 ] && grep -q \"bad duration '0'\" '$S/refused.out'"
refused redirect on --for 25h; rc=$?
check "a lease past 24 h is refused (exit $rc)" sh -c "[ $rc -eq 2 ] && grep -q \"bad duration '25h'\" '$S/refused.out'"
refused redirect on nodeX; rc=$?
check "an unknown node is refused, naming it (exit $rc)" sh -c "[ $rc -eq 1 ] && grep -q \"no node 'nodeX'\" '$S/refused.out'"
refused redirect on --all "node$Q"; rc=$?
check "--all with node names is refused (exit $rc)" sh -c "[ $rc -eq 2 ] && grep -q 'not both' '$S/refused.out'"
refused redirect on --mount /nonexistent; rc=$?
check "a volume that is not mounted is refused (exit $rc)" sh -c "[ $rc -eq 1 ] && grep -q 'no csvfs volume is mounted at /nonexistent' '$S/refused.out'"
check_eq "after the refusals node$P is still direct" "direct " "$(my_io "$P")"

# ---- unmounted: independent oracles -----------------------------------------------------
sum_laidout=$(md5_on "$C" laidout.img)
sum_user=$(md5_on "$C" user.bin)
lab_down_checked "$LUN"
kernel_ro_view "$LUN" \
  "kernel ext4 (read-only) reads the file written across the failure" "$sum_laidout" laidout.img \
  "... the file written into holes while redirected" "$sum_holes" holes.img \
  "... the small buffered file" "$sum_small" small.bin \
  "... the file written under the user redirect" "$sum_user" user.bin \
  "... the file written through the new coordinator" "$sum_moved" moved.bin \
  "... the file written while its writer could not be coordinator" "$sum_nopath" nopath.bin \
  "... the file written while the path hung" "$sum_hang" hang.img
finish
