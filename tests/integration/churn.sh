#!/usr/bin/env bash
# Churn (issue 9, docs/testing.md): a 3-node lab whose coordinator role changes at
# least 20 times at random moments — planned moves, kill -9 of the coordinator's
# daemon, and its whole node killed and fenced by the lab's fence agent — while
# node2 and node3 work without pause: each runs fio (randwrite, O_DIRECT,
# verify=crc32c) on its own preallocated VM-disk-like file, and the random
# namespace tester (fsrand ns -D: every change fsynced) works across both.
# node1 is the node that dies (whenever it is the coordinator, or it is moved
# back to it), so the workloads' own mounts never die.
# Oracles: zero application errors (fio exit status and verify, fsrand's model
# of the tree after every 25 operations and at the end of each run — nothing a
# surviving node saw succeed may be missing), the survivors' logs naming the
# fence command's confirmation, e2fsck -fn clean after the lab is down, and the
# kernel's read-only mount of the LUN holding the same tree, sizes and bytes as
# node2's mount did.
# Knobs: CHURN_CHANGES (20) role changes at least, CHURN_FENCES (2) of them
# whole-node kills, CHURN_SECONDS (240) bound on the churn phase.
. "$(dirname "$0")/../lib.sh"

lab_test_begin churn churn fio md5sum
V=/ClusterStorage/Volume1
FSRAND="$TBIN/fsrand"
CHANGES=${CHURN_CHANGES:-20}
FENCES=${CHURN_FENCES:-2}
BOUND=${CHURN_SECONDS:-240}
[ -x "$FSRAND" ] || { not_ok "$FSRAND missing (make $BUILD/tests/fsrand)"; finish; exit; }
# A long self-fence deadline: a whole-node kill is taken over on the fence
# agent's confirmation, never by waiting the deadline out.
export CSVFS_LAB_DAEMON_OPTS="fence_deadline=12000,fence_timeout=5000,pause_timeout=60000,fence_cmd=$S/fence-agent"
cat >"$S/fence-agent" <<EOF
#!/bin/sh
echo "\$1 \$2" >>'$S/fence-calls'
exec nsenter --mount=/proc/$$/ns/mnt --net=/proc/$$/ns/net -- '$LAB' --lab '$CSVFS_LAB' fence "\$2"
EOF
chmod +x "$S/fence-agent"
: >"$S/fence-calls"

on() { local k=$1; shift; timeout 120 "$LAB" exec "$k" -- "$@"; }
coordinator() { on "$1" "$CTL" status --json "$V" 2>/dev/null | sed -n 's/.*"coordinator":"node\([0-9]*\)".*/\1/p'; }
has_coordinator() { [ -n "$(coordinator "$1")" ]; }
epoch() { on 2 "$CTL" status --json "$V" 2>/dev/null | sed -n 's/.*"epoch":\([0-9]*\).*/\1/p'; }
# node2 names a coordinator of an epoch after $1: the role change is done
# (a name alone may be the old coordinator's, not yet known to be gone)
changed_since() { local e; e=$(epoch); [ -n "$e" ] && [ "$e" -gt "$1" ] && has_coordinator 2; }
coordinator_is() { [ "$(coordinator 2)" = "$1" ]; }
coordinator_left_node1() { local c; c=$(coordinator 2); [ -n "$c" ] && [ "$c" != 1 ]; }
members3() { on "$1" "$CTL" status --json "$V" 2>/dev/null | grep -o '"mounted":true' | wc -l | grep -qx 3; }
daemon_pid() { (eval "$("$LAB" env "$1")"; echo "${CSVFS_LAB_CSVFS_PID:-}"); }
root() { echo "node$1=/proc/$(daemon_pid "$1")/root$V/ns"; }

"$LAB" up -n 3 --lun "$S/lun.img" --size 1G >"$S/up.out" 2>&1; rc=$?
check_eq "lab up: 3 nodes with the lab's fence agent, the volume mounted everywhere" 0 "$rc"
[ "$rc" -eq 0 ] || { sed 's/^/# /' "$S/up.out"; finish; exit; }
check "every node knows the coordinator" wait_until 30 has_coordinator 1
[ "$(coordinator 2)" = 1 ] || on 2 "$CTL" move node1 >/dev/null 2>&1
check "node1 is the coordinator at the start" wait_until 30 coordinator_is 1
on 2 mkdir -p "$V/ns"
for k in 2 3; do on "$k" fallocate -l 64M "$V/vm$k.raw"; done
check "node2 and node3 each preallocated a 64 MiB disk" \
  sh -c "[ \"\$('$LAB' exec 3 -- stat -c %s '$V/vm2.raw' '$V/vm3.raw' | sort -u)\" = 67108864 ]"

STOP=$S/stop
# fio_loop K — fio runs on node K, one after another until STOP: 8 MiB of 4 KiB
# random writes over the disk, O_DIRECT at queue depth 8, each block verified
# (crc32c) after its run. A run that fails is counted and its output kept.
fio_loop() {
  local k=$1 runs=0 fails=0 out
  while [ ! -e "$STOP" ] && [ "$runs" -lt 200 ]; do
    runs=$((runs + 1)); out=$S/fio$k-$runs.out
    if ! on "$k" fio --name="vm$k" --filename="$V/vm$k.raw" --size=64M --io_size=8M \
        --rw=randwrite --bs=4k --direct=1 --ioengine=libaio --iodepth=8 --randrepeat=0 \
        --verify=crc32c --do_verify=1 >"$out" 2>&1 \
       || ! grep -q 'err= 0' "$out"; then
      fails=$((fails + 1)); cp "$out" "$S/fio$k-failed.out"
    fi
    rm -f "$out"
  done
  echo "runs=$runs fails=$fails" >"$S/fio$k.result"
}
# ns_loop — fsrand ns across node2 and node3 (a handoff every 6 operations),
# 15-second runs one after another until STOP, each in its own directory.
ns_loop() {
  local runs=0 fails=0 ops=0 out
  while [ ! -e "$STOP" ] && [ "$runs" -lt 40 ]; do
    runs=$((runs + 1)); out=$S/ns-$runs.out
    if timeout 300 "$FSRAND" ns -D -K -m 6 -n 100000 -t 15 -S 10 -p "c$runs" "$(root 2)" "$(root 3)" >"$out" 2>&1; then
      ops=$((ops + $(sed -n 's/^ok fsrand ns seed=[0-9]* ops=\([0-9]*\).*/\1/p' "$out" | head -1)))
    else
      fails=$((fails + 1)); cp "$out" "$S/ns-failed-$runs.out"
    fi
  done
  echo "runs=$runs fails=$fails ops=$ops" >"$S/ns.result"
}

# bring_back — node1 up again after a whole-node kill, a mounted member of three.
bring_back() {
  "$LAB" start 1 >"$S/start1.out" 2>&1 || sed 's/^/# /' "$S/start1.out"
  wait_until 90 members3 2
}
# move_to K — csvctl move, asked on node2; on a refusal its message is shown.
move_to() {
  local out
  out=$(on 2 "$CTL" move "node$1" 2>&1) && return 0
  diag "csvctl move node$1 (coordinator: node$(coordinator 2)) failed at $(date +%T.%3N): $out"
  return 1
}
# role_change HOW — one change of the coordinator's role away from node1 (it is
# the coordinator): move (to node2 or node3), kill (its daemon; restarted), or
# node (every process of node1 killed; the survivors fence it through the agent).
role_change() {
  case $1 in
    move) move_to "$(( RANDOM % 2 + 2 ))" ;;
    kill) "$LAB" kill 1 csvfs >/dev/null 2>&1 && "$LAB" start 1 csvfs >/dev/null 2>&1 ;;
    node) "$LAB" kill 1 all >/dev/null 2>&1 && wait_until 60 coordinator_left_node1 && bring_back ;;
  esac
}
# churn — CHANGES role changes at least (FENCES of them whole-node kills), each
# after a random pause of 0.5-2.5 s, every second one the way back to node1 by a
# move; bounded by BOUND seconds and 100 iterations.
churn() {
  local deadline=$(( $(date +%s) + BOUND )) done=0 i=0 fences=0 kills=0 moves=0 fails=0 how c e
  while [ "$done" -lt "$CHANGES" ] && [ "$(date +%s)" -lt "$deadline" ] && [ "$i" -lt 100 ]; do
    i=$((i + 1))
    sleep "$(( RANDOM % 3 )).$(( RANDOM % 10 ))5"
    e=$(epoch)
    c=$(coordinator 2)
    if [ "$c" = 1 ]; then
      how=move
      if [ "$fences" -lt "$FENCES" ] && [ $((i % 5)) -eq 4 ]; then how=node
      elif [ $((i % 4)) -ne 3 ]; then how=kill; fi
    elif [ -n "$c" ]; then how=back
    else how=wait; fi
    case $how in
      back) if move_to 1; then moves=$((moves + 1)); done=$((done + 1)); else fails=$((fails + 1)); fi ;;
      wait) ;;
      *) if role_change "$how"; then
           done=$((done + 1))
           case $how in move) moves=$((moves + 1)) ;; kill) kills=$((kills + 1)) ;; node) fences=$((fences + 1)) ;; esac
         else fails=$((fails + 1)); diag "role change '$how' (iteration $i, coordinator node$c) failed at $(date +%T.%3N)"; fi ;;
    esac
    if [ "$how" = wait ]; then wait_until 60 has_coordinator 2
    else wait_until 60 changed_since "${e:-0}" || { fails=$((fails + 1)); diag "no new epoch after '$how' (was ${e:-?})"; }; fi
    [ "$how" = kill ] && { wait_until 60 members3 2 || fails=$((fails + 1)); }
  done
  echo "changes=$done moves=$moves kills=$kills fences=$fences failed=$fails" >"$S/churn.result"
}

t0=$(date +%s)
fio_loop 2 & f2=$!
fio_loop 3 & f3=$!
ns_loop & nl=$!
churn
touch "$STOP"
wait "$f2" "$f3" "$nl"
diag "churn: $(cat "$S/churn.result"), $(( $(date +%s) - t0 )) s"
read -r changes moves kills fences failed < <(sed 's/[a-z]*=//g' "$S/churn.result")
check "at least $CHANGES role changes under the workloads ($(cat "$S/churn.result"))" test "$changes" -ge "$CHANGES"
check "every kind happened: moves, daemon kills, whole-node kills" test "$moves" -gt 0 -a "$kills" -gt 0 -a "$fences" -ge "$FENCES"
check_eq "no role change command failed" 0 "$failed"
check "the survivors took node1 over on the fence command's confirmation ($(wc -l <"$S/fence-calls") agent calls)" \
  sh -c "grep -hcE 'fence: node 1 \(node1\) incarnation [0-9]+: fence command confirmed' /run/csvfs-lab/$CSVFS_LAB/nodes/2/csvfs.log /run/csvfs-lab/$CSVFS_LAB/nodes/3/csvfs.log | awk '{s+=\$1} END {exit !(s >= $FENCES)}'"
for k in 2 3; do
  read -r runs fails < <(sed 's/[a-z]*=//g' "$S/fio$k.result")
  check "node$k: fio randwrite + crc32c verify, $runs runs under the churn, none failed" test "$runs" -gt 0 -a "$fails" -eq 0
  [ -f "$S/fio$k-failed.out" ] && grep -iE 'err=|verify|error' "$S/fio$k-failed.out" | head -8 | sed 's/^/#   /'
done
read -r runs fails ops < <(sed 's/[a-z]*=//g' "$S/ns.result")
check "fsrand ns across node2 and node3: $runs runs, $ops operations, no error and the tree as modelled" test "$runs" -gt 0 -a "$fails" -eq 0
# the failure itself (its first lines), then the last operations before it
for f in "$S"/ns-failed-*.out; do
  [ -f "$f" ] && { grep -v '^ *[0-9]*\. ' "$f" | head -6; tail -30 "$f"; } | sed 's/^/#   /'
  [ -f "$f" ] && cp "$f" "$TOP/$BUILD/test-logs/churn-$(basename "$f")"   # kept whole
done

# The tree as node2 sees it, to compare with the kernel's view once the lab is down.
manifest() {   # ROOT — every object under ROOT: type, path, size and md5 or target
  (cd "$1" && find . -path ./lost+found -prune -o -printf '%y %p %s %l\n' | LC_ALL=C sort |
    while read -r t p s l; do
      case $t in f) echo "f $p $s $(md5sum <"$p" | cut -d' ' -f1)" ;; l) echo "l $p $l" ;; *) echo "$t $p" ;; esac
    done)
}
on 2 bash -c "$(declare -f manifest); manifest '$V'" >"$S/node2.manifest"
check "node2's manifest of the volume ($(wc -l <"$S/node2.manifest") objects)" test "$(wc -l <"$S/node2.manifest")" -gt 10
lab_down_checked "$S/lun.img"
mkdir -p "$S/kmnt"
if mount -o ro,loop,noload "$S/lun.img" "$S/kmnt" 2>"$S/kmount.err"; then
  on_exit "umount '$S/kmnt' 2>/dev/null"
  manifest "$S/kmnt" >"$S/kernel.manifest"
  umount "$S/kmnt"
  check "the kernel's read-only view holds node2's tree: every name, type, size, byte and target" \
    cmp -s "$S/node2.manifest" "$S/kernel.manifest"
  diff "$S/node2.manifest" "$S/kernel.manifest" | head -10 | sed 's/^/#   /'
else
  not_ok "kernel read-only mount of the LUN: $(cat "$S/kmount.err")"
fi
finish
