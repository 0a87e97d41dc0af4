#!/usr/bin/env bash
# Redirected bulk data (design.md §7, docs/protocol.md "Redirected I/O"):
# many LUN_WRITE / LUN_READ requests in flight on a participant's one TLS
# connection, through the real mount of a 2-node csvfs-lab (real corosync,
# real daemons). The participant is redirected (csvctl redirect on) and fio
# writes with verify=crc32c at iodepth 16, two jobs at once: 1 MiB requests
# (the coordinator writes them straight from the received frame, which rio
# lays out page-aligned), 4 KiB ones (too small for that: a copy), and sizes
# in between (bssplit), into holes first and then over written blocks, then
# reads everything back through the coordinator. No verify failure, no
# application error; afterwards e2fsck -fn is clean and the kernel's
# read-only ext4 reads the same bytes as the nodes.
. "$(dirname "$0")/../lib.sh"

LAB="$BIN/csvfs-lab"
export CSVFS_LAB=${CSVFS_TEST_LAB:-rtppipe}   # this test's own lab
unset CSVFS_BIN CSVFS_LAB_TOKEN CSVFS_LAB_DAEMON_OPTS
V=/ClusterStorage/Volume1

skip() { ok "rio_pipeline skipped: $* # SKIP"; exit 0; }
[ "$(id -u)" -eq 0 ] || skip "needs root"
for c in corosync ip nsenter unshare fio e2fsck; do
  command -v "$c" >/dev/null 2>&1 || skip "$c not installed (make deps)"
done
[ -x "$LAB" ] || { not_ok "$LAB missing (make)"; finish; exit; }

S=$(scratch_dir)
LUN=$S/lun.img
truncate -s 1G "$LUN"
"$LAB" down >/dev/null 2>&1 || true
on_exit "'$LAB' down --save-logs '$S/logs' >/dev/null 2>&1; mkdir -p '$TOP/$BUILD/test-logs/rio_pipeline'; cp -a '$S/logs/.' '$TOP/$BUILD/test-logs/rio_pipeline/' 2>/dev/null"

. "$(dirname "$0")/../lib_io.sh"

"$LAB" up -n 2 --lun "$LUN" >"$S/up.out" 2>&1; rc=$?
check_eq "lab up: 2 nodes mounted" 0 "$rc"
[ "$rc" -eq 0 ] || { sed 's/^/# /' "$S/up.out"; finish; exit; }
check "a coordinator is known" wait_until 30 sh -c "\"$LAB\" exec 1 -- \"$BIN/csvctl\" status --json 2>/dev/null | grep -q '\"coordinator\":\"node'"
C=$(status_json 1 | sed -n 's/.*"coordinator":"node\([0-9]\)".*/\1/p')
P=$(( C % 2 + 1 ))
diag "coordinator node$C, redirected participant node$P"
out=$(on "$P" "$BIN/csvctl" redirect on --for 30m 2>&1); rc=$?
check_eq "csvctl redirect on, on node$P ($out)" 0 "$rc"
check "node$P is redirected (user-request)" wait_until 10 io_is "$P" "redirected user-request"

# fio_verify TAG ARGS... — fio on node P with crc32c verification; its output in $S/TAG.out
fio_verify() {
  local tag=$1; shift
  on "$P" fio --name="$tag" --direct=1 --ioengine=libaio --iodepth=16 --numjobs=2 \
    --verify=crc32c --verify_fatal=1 --verify_state_save=0 --group_reporting \
    "$@" --output="$S/$tag.out" >/dev/null 2>&1
}
# 1 MiB requests into holes (allocate, write through the coordinator,
# commit), each job its own file: 2 x 64 MiB.
fio_verify holes --filename_format="$V/bulk.\$jobnum" --size=64M --rw=write --bs=1M; rc=$?
check "fio 1 MiB writes into holes at iodepth 16 x 2 jobs, verified (exit $rc)" \
  sh -c "[ $rc -eq 0 ] && grep -q 'err= 0' '$S/holes.out'"
[ "$rc" -eq 0 ] || sed 's/^/#   /' "$S/holes.out" | head -20
# Overwrites of those written blocks in random order, request sizes from
# 4 KiB to 1 MiB mixed, then the read-back of every block.
MIXED=(--filename_format="$V/bulk.\$jobnum" --size=64M --rw=randwrite --bssplit=4k/30:64k/20:256k/20:1m/30)
fio_verify mixed "${MIXED[@]}"; rc=$?
check "fio mixed 4 KiB..1 MiB random overwrites at iodepth 16 x 2 jobs, verified (exit $rc)" \
  sh -c "[ $rc -eq 0 ] && grep -q 'err= 0' '$S/mixed.out'"
[ "$rc" -eq 0 ] || sed 's/^/#   /' "$S/mixed.out" | head -20
# The read-back alone, a second pass over what the mixed writes left (fio
# replays their offsets and sizes, and reads instead of writing).
fio_verify reread "${MIXED[@]}" --verify_only; rc=$?
check "fio verify-only read-back of both files through the coordinator (exit $rc)" \
  sh -c "[ $rc -eq 0 ] && grep -q 'err= 0' '$S/reread.out'"
check "node$P was redirected for all of it" io_is "$P" "redirected user-request"
grep -h -E 'WRITE:|READ:' "$S"/holes.out "$S"/mixed.out "$S"/reread.out | sed 's/^/# /'

sum0=$(md5_on "$C" bulk.0)
sum1=$(md5_on "$C" bulk.1)
check_eq "the coordinator reads bulk.0 as node$P does" "$sum0" "$(md5_on "$P" bulk.0)"
on "$P" "$BIN/csvctl" redirect off >/dev/null 2>&1
lab_down_checked "$LUN"
kernel_ro_view "$LUN" \
  "kernel ext4 (read-only) reads bulk.0 as the nodes did" "$sum0" bulk.0 \
  "... and bulk.1" "$sum1" bulk.1
finish
