#!/usr/bin/env bash
# Fencing that confirms (issue 9, docs/cluster.md "Fencing"): a 3-node
# csvfs-lab whose daemons run a fence agent (fence_cmd) when a node leaves.
# Covers: the coordinator's node cut off from the others (partition) and fenced
# by the lab's agent (csvfs-lab fence: every process of that node killed), its
# role taken over on the fence command's confirmation, not on the self-fence
# deadline; a fence agent that fails and one that hangs (killed at
# fence_timeout), where the deadline applies and the volume goes on; a
# participant that dies holding cached attributes while its agent fails, where
# a create that needs its lock waits out the deadline (longer than
# lock_timeout) instead of failing. Oracles:
# the agent's own record of its calls, the node's processes gone, the daemons'
# logs (which of the two released the locks), file contents written before
# and after each takeover read on another node, e2fsck -fn and a kernel
# read-only mount of the LUN after the lab is down.
. "$(dirname "$0")/../lib.sh"

lab_test_begin fence fence sha256sum
V=/ClusterStorage/Volume1
DEADLINE=12000
# lock_timeout below the deadline: a wait for a dead node's lock must outlast its
# fencing anyway (round 4).
export CSVFS_LAB_DAEMON_OPTS="fence_deadline=$DEADLINE,fence_timeout=3000,pause_timeout=60000,lock_timeout=3000,fence_cmd=$S/fence-agent"

# The lab's fence agent as a node's daemon runs it (NODEID NAME): from inside
# the node it reaches csvfs-lab in this test's namespaces, as a real agent
# reaches a power switch over the management network. fence-mode picks
# whether it fences, fails or hangs.
cat >"$S/fence-agent" <<EOF
#!/bin/sh
echo "\$1 \$2 \$(cat '$S/fence-mode')" >>'$S/fence-calls'
case \$(cat '$S/fence-mode') in
  ok) exec nsenter --mount=/proc/$$/ns/mnt --net=/proc/$$/ns/net -- '$LAB' --lab '$CSVFS_LAB' fence "\$2" ;;
  fail) echo "fence-agent: no power switch answers for \$2" >&2; exit 1 ;;
  hang) exec sleep 600 ;;
esac
exit 2
EOF
chmod +x "$S/fence-agent"
echo ok >"$S/fence-mode"
: >"$S/fence-calls"

on() { local k=$1; shift; timeout 120 "$LAB" exec "$k" -- "$@"; }
nodelog() { echo "/run/csvfs-lab/$CSVFS_LAB/nodes/$1/csvfs.log"; }
coordinator() { on "$1" "$CTL" status --json "$V" 2>/dev/null | sed -n 's/.*"coordinator":"node\([0-9]*\)".*/\1/p'; }
has_coordinator() { local c; c=$(coordinator "$1"); [ -n "$c" ] && [ "$c" != "$2" ]; }
members3() { on "$1" "$CTL" status --json "$V" 2>/dev/null | grep -o "\"mounted\":true" | wc -l | grep -qx 3; }
write_file() { on "$1" sh -c "head -c 1048576 /dev/urandom >'$V/$2' && sync '$V/$2' && sha256sum <'$V/$2'" | cut -d' ' -f1; }
sum_on() { on "$1" sh -c "sha256sum <'$V/$2'" 2>/dev/null | cut -d' ' -f1; }
node_has_no_process() { [ -z "$(ip netns pids "csvfslab-$CSVFS_LAB-n$1" 2>/dev/null)" ]; }
survivors_logged() { grep -qE "$1" "$(nodelog "${P[0]}")" "$(nodelog "${P[1]}")" 2>/dev/null; }

"$LAB" up -n 3 --lun "$S/lun.img" --size 512M >"$S/up.out" 2>&1; rc=$?
check_eq "lab up: 3 nodes with fence_cmd, the volume mounted everywhere" 0 "$rc"
[ "$rc" -eq 0 ] || { sed 's/^/# /' "$S/up.out"; finish; exit; }
wait_until 30 has_coordinator 1 none
declare -A SUM

# pick_roles — C: the coordinator; P: the other two.
pick_roles() {
  C=$(coordinator 1)
  P=(); for k in 1 2 3; do [ "$k" = "$C" ] || P+=("$k"); done
  diag "coordinator node$C, participants node${P[0]} node${P[1]}"
}

# bring_back K — K's node up again and a mounted member of three.
bring_back() {
  "$LAB" heal "$1" >/dev/null 2>&1
  "$LAB" start "$1" >"$S/start$1.out" 2>&1 || sed 's/^/# /' "$S/start$1.out"
  wait_until 60 members3 "$1"
}

# takeover ROUND MODE HOW — the coordinator's node leaves (HOW: partition or
# crash) with the fence agent in MODE; the survivors take the role over.
takeover() {
  local round=$1 mode=$2 how=$3 old
  pick_roles
  old=$C
  SUM[$round-before]=$(write_file "$C" "$round-before")
  check "$round: a file written and synced on coordinator node$C" test -n "${SUM[$round-before]}"
  echo "$mode" >"$S/fence-mode"
  calls=$(wc -l <"$S/fence-calls")
  if [ "$how" = partition ]; then "$LAB" partition "$C" >/dev/null
  else "$LAB" kill "$C" all >/dev/null; fi
  check "$round: node${P[0]} sees a new coordinator among the survivors" wait_until 90 has_coordinator "${P[0]}" "$old"
  SUM[$round-after]=$(write_file "${P[0]}" "$round-after")
  check "$round: node${P[0]} creates and syncs a file under the new coordinator" test -n "${SUM[$round-after]}"
  check_eq "$round: node${P[1]} reads the old coordinator's synced file" "${SUM[$round-before]}" "$(sum_on "${P[1]}" "$round-before")"
  check "$round: the fence agent was run for node$old, once ($mode)" \
    sh -c "tail -n +$((calls + 1)) '$S/fence-calls' | grep -cx '$old node$old $mode' | grep -qx 1"
}

# ---- 1. a partitioned coordinator, fenced by the agent --------------------------------
takeover fenced ok partition
check "fenced: no process is left in node$C's namespace (the agent killed them)" node_has_no_process "$C"
check "fenced: a survivor logged the fence command's confirmation for node$C" \
  survivors_logged "fence: node $C \(node$C\) incarnation [0-9]+: fence command confirmed"
check "fenced: ...and not the self-fence deadline" sh -c "! grep -qE 'fence: node $C \(node$C\) incarnation [0-9]+: self-fence deadline passed' '$(nodelog "${P[0]}")' '$(nodelog "${P[1]}")'"
check "fenced: node$C back, a member again" bring_back "$C"

# ---- 2. a fence agent that fails: the deadline applies --------------------------------
takeover failing fail crash
check "failing: a survivor logged the agent's failure, naming the node and exit status" \
  survivors_logged "fence: command for node $C \(node$C\) failed \(exit status 1\); waiting for the self-fence deadline"
check "failing: the self-fence deadline released node$C" \
  survivors_logged "fence: node $C \(node$C\) incarnation [0-9]+: self-fence deadline passed"
check "failing: node$C back, a member again" bring_back "$C"

# ---- 3. a fence agent that hangs: killed at fence_timeout, then the deadline ----------
takeover hanging hang crash
check "hanging: a survivor killed the hung agent at fence_timeout" \
  survivors_logged "fence: command for node $C \(node$C\) failed \(still running after 3000 ms: killed\)"
check "hanging: the self-fence deadline released node$C" \
  survivors_logged "fence: node $C \(node$C\) incarnation [0-9]+: self-fence deadline passed"
check "hanging: the agent's sleep is gone too (its process group was killed)" \
  sh -c "! pgrep -f '^sleep 600\$' >/dev/null"
check "hanging: node$C back, a member again" bring_back "$C"

# ---- 4. a participant dies holding cached attributes; its agent fails ------------------
# The coordinator's create in a directory the dead node had cached needs that
# node's lock on the directory's attributes, which holds until the deadline: the
# create waits (longer than lock_timeout) and succeeds, no EIO.
pick_roles
D=${P[1]}
on "$C" sh -c "mkdir '$V/cached' && echo one >'$V/cached/one' && sync '$V/cached'"
# warm as cache_coherence.sh does: the first look asks for the locks, later
# ones are answered under them (after the creates' recall cool-down, 1 s)
on "$D" sh -c "ls -l '$V/cached'; stat '$V/cached' '$V/cached/one'; sleep 1.2; ls -l '$V/cached'; stat '$V/cached'; sleep 0.3; ls -l '$V/cached'" >/dev/null 2>&1
pr_held() { on "$1" "$CTL" status --json "$V" 2>/dev/null | sed -n 's/.*"attr_locks":{"pr":\([0-9]*\).*/\1/p'; }
held=$(pr_held "$D")
check "participant: node$D holds attribute locks for what it cached (pr $held)" test "${held:-0}" -gt 0
echo fail >"$S/fence-mode"
"$LAB" kill "$D" all >/dev/null
t=$(date +%s%3N)
rc=0; on "$C" sh -c "echo two >'$V/cached/two' && sync '$V/cached/two'" || rc=$?
diag "the create on node$C returned after $(( $(date +%s%3N) - t )) ms (lock_timeout 3000, deadline $DEADLINE)"
check_eq "participant: a create on coordinator node$C in the directory node$D held waits, no error" 0 "$rc"
check "participant: the self-fence deadline released node$D" \
  sh -c "grep -qE 'fence: node $D \(node$D\) incarnation [0-9]+: self-fence deadline passed' '$(nodelog "$C")' '$(nodelog "${P[0]}")'"
check "participant: node$D back, a member again" bring_back "$D"
check_eq "participant: node$D reads the file created while it was dead" two "$(on "$D" cat "$V/cached/two" 2>/dev/null)"
SUM[cached/two]=$(printf 'two\n' | sha256sum | cut -d' ' -f1)

# ---- the LUN afterwards ---------------------------------------------------------------
lab_down_checked "$S/lun.img"
kernel_sums() {
  local m=$S/ro r f
  mkdir -p "$m"
  mount -o ro,noload,loop "$S/lun.img" "$m" || return 1
  r=0
  for f in "${!SUM[@]}"; do
    [ "$(sha256sum <"$m/$f" | cut -d' ' -f1)" = "${SUM[$f]}" ] || { diag "$f differs in the kernel's view"; r=1; }
  done
  umount "$m"
  return $r
}
check "the kernel's read-only mount holds every file written, with its contents (${#SUM[@]} files)" kernel_sums
finish
