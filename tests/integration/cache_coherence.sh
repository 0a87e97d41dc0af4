#!/usr/bin/env bash
# The kernel's caches of attributes and names on participants (docs/cluster.md,
# "Attribute caching"): a 3-node csvfs-lab, real corosync, real mounts. A
# node stats a file (or looks a name up) until its kernel caches it under the
# file's or directory's attribute lock, then another node — a participant, or
# the coordinator — changes it: chmod, chown, utimes, rename, unlink,
# truncate, write, link, create (a negative entry), readdir after a create,
# mkdir, rename over a name. The first node's next stat must see the change,
# and its count of recalls must have grown (so its cache was really on and
# really dropped). Then repeated stats of unchanged cached files give up no
# lock, a change still shows, and every node unmounts; e2fsck -fn is clean.
# The same changes seen through `ls -l` (readdirplus: the kernel's names and
# the daemon's copies of the attributes, docs/cluster.md "Attribute
# caching"). Then attr_cache=: bad values are refused, and a participant
# with attr_cache=128 lists 1000 files correctly holding at most 2 groups
# and 128 copies (csvctl status --json, attr_locks).
. "$(dirname "$0")/../lib.sh"

lab_test_begin cache_coherence cachecoh
export CSVFS_TEST_HOLD_ATTR=$S/holdattr   # the EX granted and asked back at once (fs/cluster_attr.c)
V=/ClusterStorage/Volume1
on_exit "rm -f '$S'/holdattr.*"   # holds let go before the lab goes down

on() { local k=$1; shift; timeout 60 "$LAB" exec "$k" -- "$@"; }
sh_on() { local k=$1; shift; timeout 60 "$LAB" exec "$k" -- sh -c "$*"; }
status_json() { on "$1" "$CTL" status --json "$V" 2>/dev/null; }
coordinator() { status_json "$1" | sed -n 's/.*"coordinator":"\([^"]*\)".*/\1/p'; }
# recalls NODE — how many attribute locks NODE gave up (its cached copies
# dropped); asked up to 3 times (a status request can time out on a busy machine)
recalls() {
  local i r
  for i in 1 2 3; do
    r=$(status_json "$1" | sed -n 's/.*"attr_locks":{[^}]*"recalls":\([0-9]*\).*/\1/p')
    [ -n "$r" ] && { echo "$r"; return; }
  done
}
pr_held() { status_json "$1" | sed -n 's/.*"attr_locks":{"pr":\([0-9]*\).*/\1/p'; }

"$LAB" up -n 3 --lun "$S/lun.img" --size 512M >"$S/up.out" 2>&1; rc=$?
check_eq "lab up: 3 nodes, the volume mounted everywhere" 0 "$rc"
[ "$rc" -eq 0 ] || { sed 's/^/# /' "$S/up.out"; finish; exit; }
known() { [ -n "$(coordinator 1)" ]; }
wait_until 30 known
C=$(coordinator 1)
C=${C#node}
P=()
for k in 1 2 3; do [ "$k" = "$C" ] || P+=("$k"); done
diag "coordinator node$C, participants node${P[0]} node${P[1]}"
if on "${P[0]}" grep -q "cannot drop all cached names" "/run/csvfs-lab/$CSVFS_LAB/nodes/${P[0]}/csvfs.log" 2>/dev/null; then
  diag "this kernel has no FUSE_NOTIFY_INC_EPOCH: names are not cached, attributes are"
fi

# one_case N CHANGER OBSERVER WHAT SETUP OBSERVE CHANGE EXPECTED
# SETUP runs on CHANGER in a fresh directory D=$V/cN; OBSERVE runs on OBSERVER
# (warming its caches, then after the change); expect its output EXPECTED.
n=0
one_case() {
  local changer=$1 observer=$2 what=$3 setup=$4 observe=$5 change=$6 expected=$7 d before got after
  n=$((n + 1))
  d=$V/c$n
  sh_on "$changer" "mkdir $d && cd $d && $setup" >/dev/null 2>&1
  # warm: the first look asks for the locks (file and directory), later ones
  # are answered under them (a directory recalled by the setup's creates is
  # asked for again after its cool-down, 1 s)
  sh_on "$observer" "cd $d && $observe; ls $d >/dev/null; stat $d/* >/dev/null 2>&1; sleep 1.2; $observe; stat $d/* >/dev/null 2>&1; sleep 0.3; $observe" >"$S/warm$n" 2>&1
  before=$(recalls "$observer")
  sh_on "$changer" "cd $d && $change" >"$S/change$n" 2>&1
  got=$(sh_on "$observer" "cd $d && $observe" 2>&1)
  after=$(recalls "$observer")
  check_eq "node$observer sees $what made on node$changer at once" "$expected" "$got"
  check "node$observer had it cached, and gave it up for the change (recalls $before -> $after)" \
    sh -c "[ -n '$before' ] && [ -n '$after' ] && [ '$after' -gt '$before' ]"
}

all_cases() {
  local a=$1 b=$2
  one_case "$a" "$b" "a chmod" "echo x >f; chmod 644 f" "stat -c %a f" "chmod 600 f" 600
  one_case "$a" "$b" "a chown" "echo x >f" "stat -c %u:%g f" "chown 1234:5678 f" 1234:5678
  one_case "$a" "$b" "a utimes" "echo x >f" "stat -c %Y f" "touch -m -d @1000000000 f" 1000000000
  one_case "$a" "$b" "a rename (old name)" "echo x >f" "stat -c %s f 2>/dev/null || echo gone" "mv f g" gone
  one_case "$a" "$b" "a rename (new name)" "echo x >f" "stat -c %s g 2>/dev/null || echo none" "mv f g" 2
  one_case "$a" "$b" "an unlink" "echo x >f" "stat -c %s f 2>/dev/null || echo gone" "rm f" gone
  one_case "$a" "$b" "a truncate" "echo x >f" "stat -c %s f" "truncate -s 12345 f" 12345
  one_case "$a" "$b" "a write" "echo x >f" "stat -c %s f" "printf 0123456789 >>f" 12
  one_case "$a" "$b" "a link (link count)" "echo x >f" "stat -c %h f" "ln f f2" 2
  one_case "$a" "$b" "a create (negative entry)" "echo x >f" "stat -c %s n 2>/dev/null || echo none" "echo abc >n" 4
  one_case "$a" "$b" "readdir after a create" "echo x >f" "ls | tr '\n' ' '" "touch r2" "f r2 "
  one_case "$a" "$b" "a mkdir (directory link count)" "echo x >f" "stat -c %h ." "mkdir sub" 3
  one_case "$a" "$b" "a rename over a name" "echo x >t; echo yyyy >s" "stat -c %s t" "mv s t" 5
  # ls -l: the names and attributes a readdirplus brought (the kernel's
  # names, the daemon's copies of the attributes)
  one_case "$a" "$b" "a chmod (ls -l)" "echo x >f; chmod 644 f" "$(lsl '$1')" "chmod 600 f" "-rw------- "
  one_case "$a" "$b" "a rename (ls -l)" "echo x >f; echo y >h" "$(lsl '$NF')" "mv f g" "g h "
  one_case "$a" "$b" "an unlink (ls -l)" "echo x >f; echo y >h" "$(lsl '$NF')" "rm f" "h "
  one_case "$a" "$b" "a truncate (ls -l)" "echo x >f" "$(lsl '$5')" "truncate -s 12345 f" "12345 "
  one_case "$a" "$b" "a write (ls -l)" "echo x >f" "$(lsl '$5')" "printf 0123456789 >>f" "12 "
  one_case "$a" "$b" "a create (ls -l)" "echo x >f" "$(lsl '$NF')" "echo abc >r2" "f r2 "
  # a name the listing gave the kernel, looked at by name after the change
  one_case "$a" "$b" "a rename (a name ls -l listed)" "echo x >f" "ls -ln >/dev/null; stat -c %s f 2>/dev/null || echo gone" "mv f g" gone
}
# lsl FIELD — a command: ls -l of the current directory, that field of each file on one line
lsl() { echo "ls -ln | awk 'NR > 1 {printf \"%s \", $1}'"; }

all_cases "${P[0]}" "${P[1]}"   # participant to participant
all_cases "${P[1]}" "${P[0]}"   # and back
all_cases "$C" "${P[0]}"        # the coordinator's own changes

# ---- caching pays: cached stats reach nobody -----------------------------------------
sh_on "${P[1]}" "mkdir $V/hot && for i in 1 2 3 4 5 6 7 8; do echo \$i >$V/hot/f\$i; done"
sh_on "${P[0]}" "stat $V/hot/f* >/dev/null; sleep 1.2; stat $V/hot/f* >/dev/null"
held=$(pr_held "${P[0]}")
check "node${P[0]} holds the attribute lock of the files it stats (pr=$held)" sh -c "[ '${held:-0}' -ge 1 ]"
r0=$(recalls "${P[0]}")
sh_on "${P[0]}" "for i in \$(seq 200); do stat $V/hot/f* >/dev/null; done"
check_eq "1600 stats of 8 unchanged files on node${P[0]}: still cached, no lock given up" "$r0" "$(recalls "${P[0]}")"
sh_on "$C" "chmod 700 $V/hot/f3"
check_eq "node${P[0]} then sees a chmod on the coordinator" 700 "$(sh_on "${P[0]}" "stat -c %a $V/hot/f3")"

# ---- a stall explains itself: a holder that does not give its lock up ----------------
# node P0 caches the hot files again, then its daemon is stopped (SIGSTOP, 5 s: under the
# 10 s idle timeout of its link) while the coordinator changes one of them: the change
# waits for the EX (a stall, not an error) and after 3 s the coordinator logs one line
# naming the lock and the node holding it (docs/cluster.md "Attribute caching").
sh_on "${P[0]}" "sleep 1.2; stat $V/hot/f* >/dev/null; sleep 1.2; stat $V/hot/f* >/dev/null"
check "node${P[0]} holds the hot files' attribute lock again (pr=$(pr_held "${P[0]}"))" \
  sh -c "[ '$(pr_held "${P[0]}")' -ge 1 ]"
ppid_file=/run/csvfs-lab/$CSVFS_LAB/nodes/${P[0]}/csvfs.pid
clog=/run/csvfs-lab/$CSVFS_LAB/nodes/$C/csvfs.log
ppid=$(cut -d" " -f1 "$ppid_file" 2>/dev/null)   # "PID START-TIME"
if [ -n "$ppid" ] && kill -STOP "$ppid"; then
  sh_on "$C" "chmod 710 $V/hot/f5" >"$S/stall.out" 2>&1 &
  chpid=$!
  sleep 5
  kill -CONT "$ppid"
  wait "$chpid"; rc=$?
  check_eq "the coordinator's chmod waited for node${P[0]} and succeeded" 0 "$rc"
  check "the coordinator logged the wait, naming the lock and node${P[0]} holding PR" \
    grep -q "lock A[0-9]*: the change of inode [0-9]* has waited [0-9]* ms for EX; held by .*node id ${P[0]} PR asked to release" "$clog"
  grep -h "has waited" "$clog" | sed 's/^/# /'
  check_eq "node${P[0]} then sees the chmod" 710 "$(sh_on "${P[0]}" "stat -c %a $V/hot/f5")"
else
  not_ok "stop node${P[0]}'s daemon (pid '$ppid' from $ppid_file)"
fi

# ---- an EX granted and asked back at once ----------------------------------------------
# node P0 holds the PR of r's group; node P1's request for it is held (test hook, before
# it is sent), then the coordinator's chmod asks for the EX and is held before it looks
# for the grant. P0 gives its PR up, the EX is granted; P1's request, let go now, queues
# behind it and asks it back at once. The change must still see its grant (before the
# fix the coordinator's drop thread took the entry away first: "did not give up their
# cached attributes", EIO, though every other node had).
H=$CSVFS_TEST_HOLD_ATTR
sh_on "$C" "mkdir $V/race && echo x >$V/race/r"
G=$(( $(sh_on "$C" "stat -c %i $V/race/r") / 64 ))   # r's group: the hooks hold only its lock
sh_on "${P[0]}" "stat $V/race/r >/dev/null; sleep 1.2; stat $V/race/r >/dev/null; sleep 0.3; stat $V/race/r >/dev/null"
r0=$(recalls "${P[0]}")
ex_kept() { status_json "$C" | sed -n 's/.*"attr_locks":{[^}]*"ex":\([0-9]*\).*/\1/p'; }
held_line() { [ "$(grep -c "holding an attribute lock's $2 while $H.node$1.$2 exists" "/run/csvfs-lab/$CSVFS_LAB/nodes/$1/csvfs.log")" -gt "${3:-0}" ]; }
hold() { echo "$G" >"$H.tmp" && mv "$H.tmp" "$H.$1"; }   # whole, or the hook reads no group
hold "node${P[1]}.ask"
sh_on "${P[1]}" "stat -c %a $V/race/r" >"$S/race.p1" 2>&1 &
p1pid=$!
check "node${P[1]}'s request for the PR of A$G is held (test hook)" wait_until 20 held_line "${P[1]}" ask
hold "node$C.wait"
sh_on "$C" "chmod 640 $V/race/r" >"$S/race.chmod" 2>&1 &
chpid=$!
check "the coordinator's chmod asked for the EX and is held before it looks (test hook)" \
  wait_until 20 held_line "$C" wait
gave_up() { [ "$(recalls "${P[0]}")" -gt "${r0:-0}" ]; }
check "node${P[0]} gave its PR up for the coordinator's EX (recalls $r0 -> more)" wait_until 20 gave_up
sleep 1                         # its unlock follows: the EX is granted
ex0=$(ex_kept)
rm -f "$H.node${P[1]}.ask"      # node P1's PR queues behind the EX and asks it back
# before the fix the coordinator's drop thread takes the EX entry away now (its count
# falls); with it, the drop waits for the held change: the wait runs out (8 s)
ex_gone() { [ "$(ex_kept)" -lt "${ex0:-0}" ]; }
if wait_until 8 ex_gone; then diag "the coordinator let go of the EX before the change looked (ex $ex0 -> $(ex_kept))"; fi
rm -f "$H.node$C.wait"
wait "$chpid"; rc=$?
wait "$p1pid"
check_eq "the coordinator's chmod saw its EX though it was asked back at once (exit $rc: $(cat "$S/race.chmod"))" 0 "$rc"
check_eq "node${P[0]} sees the chmod" 640 "$(sh_on "${P[0]}" "stat -c %a $V/race/r")"
check_eq "node${P[1]} sees the chmod" 640 "$(sh_on "${P[1]}" "stat -c %a $V/race/r")"

"$LAB" down --save-logs "$S/logs" >"$S/down.out" 2>&1
check_eq "lab down: every node unmounted cleanly" 0 "$?"
check "e2fsck -fn: the LUN is clean after it all" e2fsck -fn "$S/lun.img"

# ---- the bound: attr_cache= (inodes a participant caches, kernel and daemon) ----------
for bad in attr_cache=lots attr_cache=4194305 attr_cache=; do
  "$BIN/csvfs" -f -o "cluster,$bad" UUID=00000000-0000-0000-0000-000000000000 "$S" >"$S/bad.out" 2>&1
  rc=$?
  check "csvfs -o $bad is refused (exit $rc), naming the option and the cause" \
    sh -c "[ $rc -ne 0 ] && grep -q \"bad option '$bad': expected a number up to 4194304\" '$S/bad.out'"
done
CSVFS_LAB_DAEMON_OPTS="$CSVFS_LAB_DAEMON_OPTS,attr_cache=128" \
  "$LAB" up -n 2 --lun "$S/lun2.img" --size 256M >"$S/up2.out" 2>&1; rc=$?
check_eq "lab up: 2 nodes, every daemon with attr_cache=128 (2 groups of 64)" 0 "$rc"
[ "$rc" -eq 0 ] || { sed 's/^/# /' "$S/up2.out"; finish; exit; }
wait_until 30 known
C=$(coordinator 1); C=${C#node}
Q=1; [ "$C" = 1 ] && Q=2
field() { status_json "$Q" | sed -n "s/.*\"attr_locks\":{[^}]*\"$1\":\([0-9]*\).*/\1/p"; }
sh_on "$C" "mkdir $V/big && cd $V/big && seq -f 'f%04g' 1 1000 | xargs touch && chmod 600 f0500"
sh_on "$C" "ls -ln $V/big" >"$S/big.coordinator"
for i in 1 2 3; do
  sh_on "$Q" "ls -ln $V/big" >"$S/big.participant.$i"
  sleep 1.2   # a lock asked for is granted meanwhile: the next listing caches under it
  pr=$(field pr); cached=$(field cached)
  check "ls -l $i of 1000 files on node$Q: at most 2 groups held (pr=$pr), 128 attributes kept (cached=$cached)" \
    sh -c "[ -n '$pr' ] && [ '$pr' -le 2 ] && [ -n '$cached' ] && [ '$cached' -le 128 ]"
  check_eq "ls -l $i of 1000 files on node$Q lists what the coordinator lists" \
    "$(md5sum <"$S/big.coordinator")" "$(md5sum <"$S/big.participant.$i")"
done
check_eq "node$Q's bound is the option's (pr_max)" 2 "$(field pr_max)"
check "node$Q did keep attributes under the bound (cached=$cached)" sh -c "[ '${cached:-0}' -gt 0 ]"
"$LAB" down --save-logs "$S/logs2" >"$S/down2.out" 2>&1
check_eq "lab down (attr_cache=128): every node unmounted cleanly" 0 "$?"
check "e2fsck -fn: that LUN is clean too" e2fsck -fn "$S/lun2.img"
finish
