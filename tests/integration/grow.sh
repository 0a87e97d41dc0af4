#!/usr/bin/env bash
# csvctl grow (docs/volumes.md) on a 3-node csvfs-lab: the LUN (an image
# file) grows with truncate, and the volume takes the new size while two
# participants write and verify with fio. Real daemons, real corosync, real
# mounts. Covers: grow refused while the LUN has not grown; grow asked on a
# participant under fio verify=crc32c writes on both participants; df on all
# three nodes shows the new size; writes after the grow; grow refused when
# it would need another group descriptor block (blocks would move).
# Oracles: fio's verify, df, dumpe2fs's block count, e2fsck -fn.
. "$(dirname "$0")/../lib.sh"

lab_test_begin grow grow resize2fs dumpe2fs fio
V=/ClusterStorage/Volume1

on() { local k=$1; shift; timeout 180 "$LAB" exec "$k" -- "$@"; }
coordinator() { on "$1" "$CTL" status --json "$V" 2>/dev/null | sed -n 's/.*"coordinator":"\([^"]*\)".*/\1/p'; }
size_mib() { on "$1" df -B1M --output=size "$V" | tail -n 1 | tr -d ' '; }
all_sizes() { local k; for k in 1 2 3; do [ "$(size_mib "$k")" = "$1" ] || return 1; done; }

LUN=$S/lun.img
"$LAB" up -n 3 --lun "$LUN" --size 1G >"$S/up.out" 2>&1; rc=$?
check_eq "lab up: 3 nodes on a 1 GiB LUN" 0 "$rc"
[ "$rc" -eq 0 ] || { sed 's/^/# /' "$S/up.out"; finish; exit; }
wait_until 30 sh -c "[ -n \"\$('$LAB' exec 1 -- '$CTL' status --json '$V' 2>/dev/null | sed -n 's/.*\"coordinator\":\"\\([^\"]\\+\\)\".*/\\1/p')\" ]"
C=$(coordinator 1); C=${C#node}
P=(); for k in 1 2 3; do [ "$k" = "$C" ] || P+=("$k"); done
diag "coordinator node$C, participants node${P[0]} node${P[1]}"
check "df shows 1024 MiB on every node" all_sizes 1024

on "${P[0]}" "$CTL" grow "$V" >"$S/grow-same.out" 2>&1; rc=$?
check "grow is refused while the LUN has not grown (exit $rc)" \
  sh -c "[ $rc = 1 ] && grep -q 'grow the LUN first' '$S/grow-same.out'"

# ---- grow under fio verify on both participants ---------------------------------------
pids=()
for k in "${P[@]}"; do
  on "$k" fio --name=growv$k --filename="$V/fio.$k" --size=48M --bs=64k --rw=randwrite --direct=1 \
    --ioengine=psync --verify=crc32c --verify_state_save=0 --do_verify=1 --verify_fatal=1 --loops=4 >"$S/fio.$k.out" 2>&1 &
  pids+=("$!")
done
wait_until 30 sh -c "[ -s '$LUN' ] && '$LAB' exec ${P[0]} -- test -s '$V/fio.${P[0]}' && '$LAB' exec ${P[1]} -- test -s '$V/fio.${P[1]}'"
# 10 GiB: past what one descriptor block covers (8 GiB), into the blocks mkfs reserved
truncate -s 10G "$LUN"
on "${P[0]}" "$CTL" grow "$V" >"$S/grow.out" 2>&1; rc=$?
sed 's/^/# /' "$S/grow.out"
check_eq "csvctl grow (asked on participant node${P[0]}) while both participants write" 0 "$rc"
fio_running=0
for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && fio_running=$((fio_running + 1)); done
diag "fio jobs still running when the grow finished: $fio_running of 2"
for i in 0 1; do
  wait "${pids[$i]}"; rc=$?
  check_eq "node${P[$i]}'s fio (verify=crc32c) had no error across the grow" 0 "$rc"
  [ "$rc" -eq 0 ] || tail -5 "$S/fio.${P[$i]}.out" | sed 's/^/#   /'
done
check "df shows 10240 MiB on every node" wait_until 30 all_sizes 10240
check "the coordinator kept its role" sh -c "[ \"\$('$LAB' exec ${P[1]} -- '$CTL' status --json '$V' | sed -n 's/.*\"coordinator\":\"\\([^\"]*\\)\".*/\\1/p')\" = node$C ]"
check "a participant writes 1.2 GiB, more than the old volume held" \
  on "${P[1]}" sh -c "dd if=/dev/zero of='$V/big' bs=1M count=1200 conv=fsync status=none"
check "every node reads its size back" \
  sh -c "for k in 1 2 3; do [ \"\$('$LAB' exec \$k -- stat -c %s '$V/big')\" = $((1200 * 1048576)) ] || exit 1; done"
on "$C" rm -f "$V/big"

# ---- a grow that would move blocks --------------------------------------------------------
# mkfs reserved descriptor blocks for 1024 times the first 1 GiB: 2 TiB is past them.
truncate -s 2T "$LUN"
on "$C" "$CTL" grow "$V" >"$S/grow-far.out" 2>&1; rc=$?
check "grow past the descriptor blocks is refused, saying how far it can go (exit $rc)" \
  sh -c "[ $rc = 1 ] && grep -q 'group descriptor blocks.*at most' '$S/grow-far.out'"
check "the volume kept 10240 MiB on every node" all_sizes 10240
check_fails "csvctl grow with no volume is a usage error" on 1 "$CTL" grow

"$LAB" down >"$S/down.out" 2>&1
check_eq "lab down" 0 "$?"
check "dumpe2fs: the volume has 2621440 blocks" sh -c "dumpe2fs -h '$LUN' 2>/dev/null | grep -q '^Block count: *2621440$'"
check "e2fsck -fn clean after the grow" fsck_clean "$LUN" "$S/fsck.out"
finish
