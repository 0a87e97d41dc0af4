#!/usr/bin/env bash
# csvfs-lab — an N-node csvfs cluster on one machine, for trying csvfs and for
# every cluster test (design.md §10; docs/lab.md is the manual).
#
# A node is a network namespace (veth to a private bridge, address in
# 10.213.0.0/24) plus persistent mount and UTS namespaces with a private /run,
# /etc/corosync, /var/lib/corosync and /dev/shm. Each node runs its own
# corosync (knet with a per-lab authkey, votequorum) and, unless --no-mount, a
# csvfs daemon mounted at /ClusterStorage/Volume1 inside the node. Everything
# `up` creates is written to a journal in the state dir *before* it is created,
# so `down` removes exactly that — also after a partial or interrupted `up`.
#
# Exit codes: 0 ok · 1 operation failed · 2 usage / no such node ·
#             3 missing prerequisite (not root, command or binary missing) ·
#             4 lab state conflict (a lab is already up / no lab is up).
set -euo pipefail
shopt -s nullglob

PROG=csvfs-lab
readonly E_FAIL=1 E_USAGE=2 E_ENV=3 E_STATE=4
readonly MAX_NODES=8
readonly NET=10.213.0                 # exists only inside the lab's namespaces
readonly ADDR_BASE=10                 # node K is $NET.$((ADDR_BASE + K))
readonly BRIDGE=csvfslab-br           # lives in the lab's switch namespace
# The volume the functions below act on (use_volume): volume 1 is the one
# 'up' prepares, 2.. come from 'add-volume'.
VOL=1 MNT=/ClusterStorage/Volume1 PIDN=csvfs VGUID="" VLUN=""
ROOT=${CSVFS_LAB_ROOT:-/run/csvfs-lab}
DATA=${CSVFS_LAB_DATA:-/var/tmp/csvfs-lab}
QUORUM_TIMEOUT=${CSVFS_LAB_TIMEOUT:-30}
MOUNT_TIMEOUT=${CSVFS_LAB_MOUNT_TIMEOUT:-30}
STOP_TIMEOUT=${CSVFS_LAB_STOP_TIMEOUT:-20}
TOKEN=${CSVFS_LAB_TOKEN:-1000}
DEFAULT_SIZE=1G
BIN=${CSVFS_BIN:-$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)}

die()  { local rc=$1; shift; echo "$PROG: $*" >&2; exit "$rc"; }
warn() { echo "$PROG: $*" >&2; }
say()  { echo "$PROG: $*"; }

usage() {
  cat <<EOF
usage: $PROG [--lab NAME] COMMAND [ARGS]

  up [-n N] [--lun PATH | --size SIZE] [--no-mount] [--paths]
                         start N nodes (default 3, max $MAX_NODES), each with its own
                         corosync; wait for a quorate membership of N; then format
                         the LUN if it is blank and mount csvfs on every node at
                         $MNT (skipped with --no-mount); --paths gives each
                         node its own path to the LUN (csvfs-lunpath), which
                         'fault' can make fail or hang
  down [--save-logs DIR] unmount csvfs on every node (participants first, the
                         coordinator last) before stopping corosync; stop everything
                         the lab started and remove everything it created; safe to
                         repeat and after a partial 'up'
  add-volume [--lun PATH | --size SIZE]
                         one more volume (its own LUN, formatted if blank): csvfs
                         mounts it on every node at /ClusterStorage/VolumeV, V = 2, 3...
  status                 nodes, addresses, pids, membership/quorum seen by each
                         node, link state, whether the volume is mounted there
  exec NODE [-- CMD...]  run CMD (default: a shell) inside NODE's mount, UTS and
                         network namespaces
  env NODE               print NODE's identity and paths as shell assignments
  quorum NODE            print "members=M quorate=yes|no ids=1,2,..." as NODE sees it
  kill NODE [csvfs|volV|corosync|all]   kill -9 the recorded process (default
                         all; csvfs: every volume's daemon; volV: volume V's only)
  fence NODE             power NODE off: SIGKILL to every process in its network
                         namespace; exits 0 only once all are gone (the lab's
                         fence agent: docs/lab.md, "Fencing")
  start NODE [csvfs|volV|corosync|all]  (re)start it (default all that are not running)
  partition NODE         take NODE's link to the bridge down
  heal NODE              bring it back up
  fault NODE path fail|hang|ok   make NODE's path to the LUN fail every I/O
                         with EIO, hang every I/O, or work again (needs --paths)

NODE is 1..N or node1..nodeN. --lab NAME (or CSVFS_LAB=NAME) selects an
independent lab instance (own namespaces and state, same addresses).
Environment: CSVFS_LAB_TOKEN (corosync token ms, default 1000),
CSVFS_LAB_TIMEOUT (quorum wait s, 30), CSVFS_LAB_MOUNT_TIMEOUT (s, 30),
CSVFS_LAB_STOP_TIMEOUT (s down waits for the daemons to exit, 20),
CSVFS_LAB_DAEMON_OPTS (extra -o options for csvfs), CSVFS_BIN (binaries dir).
See docs/lab.md.
EOF
}

# ---------------------------------------------------------------- instance --

set_instance() {
  local name=${1:-default}
  [[ $name =~ ^[a-z0-9]{1,12}$ ]] || die $E_USAGE "bad lab name '$name' (1-12 characters a-z 0-9)"
  INST=$name
  if [ "$name" = default ]; then PFX=csvfslab- CLUSTER=csvfslab LABOPT=""
  else PFX=csvfslab-$name- CLUSTER=csvfslab-$name LABOPT=" --lab $name"; fi
  STATE=$ROOT/$name
  NSDIR=$STATE/ns
  JOURNAL=$STATE/created
  SW=${PFX}sw
}

node_name()  { echo "node$1"; }
node_addr()  { echo "$NET.$((ADDR_BASE + $1))"; }
node_netns() { echo "${PFX}n$1"; }
node_port()  { echo "csvfslab-p$1"; }
ndir()       { echo "$STATE/nodes/$1"; }
# nsargs K — sets NSA to the nsenter arguments that enter node K.
nsargs() { NSA=(--mount="$NSDIR/n$1.mnt" --uts="$NSDIR/n$1.uts" --net="/run/netns/$(node_netns "$1")"); }
# in_node K CMD... — run CMD (foreground) inside node K.
in_node() { local k=$1; shift; nsargs "$k"; nsenter "${NSA[@]}" -- "$@"; }

load_state() {
  [ -f "$STATE/lab.env" ] || die $E_STATE "no lab '$INST' is up (no $STATE/lab.env); start one with '$PROG$LABOPT up'"
  # shellcheck source=/dev/null
  . "$STATE/lab.env"
}

# use_volume V — MNT, VGUID, VLUN and PIDN (the daemon's pid and log file
# name in the node dir) become volume V's.
use_volume() {
  local v=$1
  VOL=$v MNT=/ClusterStorage/Volume$v
  if [ "$v" = 1 ]; then
    VGUID=${GUID:-} VLUN=${LUN:-} PIDN=csvfs
    return 0
  fi
  [ -f "$STATE/volumes/$v.env" ] || die $E_USAGE "lab '$INST' has no volume $v (volumes: $(lab_volumes | tr '\n' ' '))"
  # shellcheck source=/dev/null
  . "$STATE/volumes/$v.env"
  PIDN=csvfs-v$v
}
# lab_volumes — the lab's volume numbers, one a line.
lab_volumes() {
  [ -z "${GUID:-}" ] || echo 1
  local f
  for f in "$STATE"/volumes/*.env; do [ -f "$f" ] && { f=${f##*/}; echo "${f%.env}"; }; done | sort -n
}

# resolve_node ARG — prints K for "K" or "nodeK" when 1 <= K <= N.
resolve_node() {
  local a=${1:-} k
  case $a in
    node[0-9]*) k=${a#node} ;;
    [0-9]*) k=$a ;;
    *) die $E_USAGE "no such node '$a' (use 1..$N or node1..node$N)" ;;
  esac
  if ! [[ $k =~ ^[0-9]+$ ]] || [ "$((10#$k))" -lt 1 ] || [ "$((10#$k))" -gt "$N" ]; then
    die $E_USAGE "no such node '$a' (lab '$INST' has node1..node$N)"
  fi
  echo "$((10#$k))"
}

need_root() { [ "$(id -u)" -eq 0 ] || die $E_ENV "must run as root (it creates network and mount namespaces)"; }
need_cmds() {
  local c missing=()
  for c in "$@"; do command -v "$c" >/dev/null 2>&1 || missing+=("$c"); done
  [ ${#missing[@]} -eq 0 ] || die $E_ENV "missing commands: ${missing[*]} (run 'make deps'; corosync, iproute2, util-linux)"
}

# ------------------------------------------------------------------ locking --

# One csvfs-lab command at a time changes labs: flock on the state root dir.
# After taking it, check the dir is still the one at that path (down may have
# removed it meanwhile).
take_lock() {
  local i
  for i in 1 2 3; do
    mkdir -p "$ROOT"
    exec {LOCKFD}<"$ROOT"
    flock -w 120 "$LOCKFD" || die $E_STATE "another $PROG command still holds $ROOT after 120 s"
    [ "$(stat -Lc %d:%i "/proc/self/fd/$LOCKFD")" = "$(stat -c %d:%i "$ROOT" 2>/dev/null)" ] && return 0
    exec {LOCKFD}<&-
  done
  die $E_FAIL "could not lock $ROOT"
}

# ---------------------------------------------------------------- processes --

# Pid files hold "PID STARTTIME": the pid names our process only while
# /proc/PID/stat shows that start time (pid reuse) and it is not a zombie.
proc_field() {  # proc_field PID N — field N (>= 3) of /proc/PID/stat
  local s f
  read -r s 2>/dev/null <"/proc/$1/stat" || return 1
  s=${s##*) }
  read -r -a f <<<"$s"
  echo "${f[$2 - 3]}"
}
# rec_pid PIDFILE — prints the pid when the recorded process is still alive.
rec_pid() {
  local pidf=$1 pid st
  [ -f "$pidf" ] || return 1
  read -r pid st <"$pidf" || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [ "$(proc_field "$pid" 22 2>/dev/null)" = "$st" ] || return 1
  [ "$(proc_field "$pid" 3)" != Z ] || return 1
  echo "$pid"
}
# wait_gone PID SECONDS — bounded wait for a process to exit.
wait_gone() {
  local pid=$1 i
  for ((i = 0; i < $2 * 10; i++)); do
    [ -d "/proc/$pid" ] && [ "$(proc_field "$pid" 3 2>/dev/null)" != Z ] || return 0
    sleep 0.1
  done
  return 1
}

# spawn K LOG PIDFILE CMD... — start CMD detached inside node K (own session,
# stdin /dev/null, output appended to LOG, no inherited fds) and record it.
spawn() {
  local k=$1 log=$2 pidf=$3 pid st i
  shift 3
  nsargs "$k"
  (
    for i in /proc/self/fd/*; do
      i=${i##*/}
      if [ "$i" -gt 2 ]; then { exec {i}>&-; } 2>/dev/null || true; fi
    done
    echo "=== $(date '+%F %T') $PROG starts: $*"
    exec setsid nsenter "${NSA[@]}" -- "$@"
  ) </dev/null >>"$log" 2>&1 &
  pid=$!
  st=$(proc_field "$pid" 22) || die $E_FAIL "node$k: $1 exited at once; see $log"
  echo "$pid $st" >"$pidf"
}

# --------------------------------------------------------------- the journal --

# record KIND ARG — append before creating the object; down undoes in reverse.
record() { echo "$1 $2" >>"$JOURNAL"; }

undo() {  # undo KIND ARG
  local kind=$1 arg=$2
  case $kind in
    netns)
      if [ -e "/run/netns/$arg" ]; then ip netns del "$arg" || return 1; fi ;;
    nsfile)
      if mountpoint -q "$arg" 2>/dev/null; then umount "$arg" 2>/dev/null || umount -l "$arg" || return 1; fi
      rm -f "$arg" ;;
    bindself)
      if mountpoint -q "$arg" 2>/dev/null; then umount "$arg" 2>/dev/null || umount -l "$arg" || return 1; fi ;;
    netnsmnt)   # ip netns made /run/netns a mount point; undo when nobody uses it
      if mountpoint -q "$arg" && [ -z "$(ls -A "$arg")" ]; then umount "$arg" || return 1; fi ;;
    dir)        # a directory we created outside the state dir (if empty)
      if [ -d "$arg" ]; then
        if [ "$arg" = /ClusterStorage ] && [ -n "$(other_labs)" ]; then return 0; fi
        rmdir "$arg" 2>/dev/null || true
      fi ;;
    file) rm -f "$arg" ;;
    *) warn "unknown journal entry '$kind $arg'" ;;
  esac
}

other_labs() { local d; for d in "$ROOT"/*/lab.env; do d=${d%/lab.env}; [ "$d" = "$STATE" ] || echo "${d##*/}"; done; }

# Namespaces that carry this lab's names but no state dir records them.
orphan_netns() {
  ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${PFX//./\\.}(sw|n[0-9]+)$" || true
}

# foreign_mounts (an awk program over /proc/self/mountinfo, run inside a new
# node mount namespace) — prints "FSTYPE MOUNTPOINT", deepest first, for each
# copied mount that can pin something the host may want to let go of:
#   * FUSE (fuse, fuse.*, fuseblk): its daemon runs until the last copy of
#     the mount is gone — a standalone csvfs would keep its MMP held;
#   * nsfs: it keeps a namespace alive (another lab's nodes, a netns);
#   * anything on a loop device: a loop-mounted image (the kernel's ext4
#     on a csvfs image runs its MMP thread while mounted).
# Not "/", nor a mount that holds a path in $CSVFS_LAB_KEEP (one a line).
FOREIGN_AWK='
function unesc(s,   out, c) {
  out = ""
  while (match(s, /\\[0-7][0-7][0-7]/)) {
    c = substr(s, RSTART + 1, 3)
    out = out substr(s, 1, RSTART - 1) sprintf("%c", substr(c, 1, 1) * 64 + substr(c, 2, 1) * 8 + substr(c, 3, 1))
    s = substr(s, RSTART + 4)
  }
  return out s
}
function needed(mp,   i) {
  for (i = 1; i <= nkeep; i++)
    if (kp[i] == mp || index(kp[i], mp "/") == 1) return 1
  return 0
}
BEGIN { nkeep = split(ENVIRON["CSVFS_LAB_KEEP"], kp, "\n") }
{
  for (i = 7; i <= NF && $i != "-"; i++) ;
  t = $(i + 1); src = $(i + 2); mp = unesc($5)
  if (mp == "/" || mp ~ /\n/) next
  if (t == "fuse" || t == "fuseblk" || t ~ /^fuse\./ || t == "nsfs" || src ~ /^\/dev\/loop[0-9]/)
    if (!needed(mp)) out[++n] = t " " mp
}
END { for (i = n; i >= 1; i--) print out[i] }'

# --------------------------------------------------------------- corosync --

write_corosync_conf() {  # write_corosync_conf FILE
  local k
  {
    cat <<EOF
# Generated by $PROG for lab '$INST' ($N nodes); see docs/lab.md.
totem {
    version: 2
    cluster_name: $CLUSTER
    transport: knet
    ip_version: ipv4
    crypto_model: openssl
    crypto_cipher: aes256
    crypto_hash: sha256
    # Lab timing: token loss declared after $TOKEN ms whatever N is (no
    # per-node coefficient); consensus defaults to 1.2 * token.
    token: $TOKEN
    token_coefficient: 0
    interface {
        linknumber: 0
    }
}

nodelist {
EOF
    for ((k = 1; k <= N; k++)); do
      printf '    node {\n        nodeid: %d\n        name: %s\n        ring0_addr: %s\n    }\n' \
        "$k" "$(node_name "$k")" "$(node_addr "$k")"
    done
    cat <<EOF
}

quorum {
    provider: corosync_votequorum
}

logging {
    to_stderr: yes
    to_logfile: no
    to_syslog: no
    timestamp: on
    fileline: off
}

system {
    # never leave the caller's cgroup
    move_to_root_cgroup: no
}
EOF
  } >"$1"
}

# quorum_line K — "members=M quorate=yes|no ids=1,2,3" from node K's corosync.
quorum_line() {
  local out
  nsargs "$1"
  out=$(timeout -k 1 5 nsenter "${NSA[@]}" -- corosync-quorumtool -s 2>&1) || true
  awk '
    /^Nodes:/    { m = $2 }
    /^Quorate:/  { q = tolower($2) }
    /Membership information/ { inm = 1; next }
    inm && $1 ~ /^[0-9]+$/ { ids = ids (ids == "" ? "" : ",") $1 }
    END { if (m == "") exit 1; printf "members=%s quorate=%s ids=%s\n", m, q, ids }
  ' <<<"$out"
}

# spawn_corosync K — start node K's corosync unless it runs; no waiting.
spawn_corosync() {
  local k=$1 d pid
  d=$(ndir "$k")
  if pid=$(rec_pid "$d/corosync.pid"); then say "node$k: corosync already running (pid $pid)"; return 0; fi
  spawn "$k" "$d/corosync.log" "$d/corosync.pid" corosync -f
}

# wait_corosync K — until node K's corosync answers on its IPC (10 s).
wait_corosync() {
  local k=$1 d pid i
  d=$(ndir "$k")
  for ((i = 0; i < 100; i++)); do
    if ! pid=$(rec_pid "$d/corosync.pid"); then
      tail -n 5 "$d/corosync.log" | sed 's/^/    /' >&2
      die $E_FAIL "node$k: corosync exited during startup; log: $d/corosync.log"
    fi
    if in_node "$k" timeout -k 1 3 corosync-cmapctl -g totem.cluster_name >/dev/null 2>&1; then
      say "node$k: corosync pid $pid"
      return 0
    fi
    sleep 0.1
  done
  die $E_FAIL "node$k: corosync (pid $pid) does not answer after 10 s; log: $d/corosync.log"
}

start_corosync() { spawn_corosync "$1"; wait_corosync "$1"; }

# wait_quorate_node K SECONDS — until node K's corosync says quorate.
wait_quorate_node() {
  local k=$1 deadline=$(( $(date +%s) + $2 ))
  until [[ "$(quorum_line "$k" 2>/dev/null)" == *" quorate=yes "* ]]; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

# wait_members M SECONDS NODES... — until each node sees M members, quorate.
wait_members() {
  local m=$1 limit=$2 k ok deadline
  shift 2
  deadline=$(($(date +%s) + limit))
  while :; do
    ok=1
    for k in "$@"; do
      [[ "$(quorum_line "$k" 2>/dev/null)" == "members=$m quorate=yes "* ]] || { ok=0; break; }
    done
    [ "$ok" = 1 ] && return 0
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

# ------------------------------------------------------------------ csvfs --

# ------------------------------------------------------ per-node LUN paths --
# With --paths every node reaches the LUN through its own csvfs-lunpath (a
# FUSE pass-through mounted inside the node, docs/lab.md "Path faults"): the
# file $PATH_MNT/lun inside node K, switched by node K's mode file.
readonly PATH_MNT=/run/csvfs-path      # inside the node (its private /run)
path_mode_file() { echo "$(ndir "$1")/run/csvfs-path.mode"; }   # host side of /run/csvfs-path.mode
node_lun() {  # node_lun K — the LUN path node K's daemon opens
  if [ "${PATHS:-0}" = 1 ]; then echo "$PATH_MNT/lun"; else echo "$LUN"; fi
}

# set_path_mode K ok|fail|hang — atomically, so the path never reads half a word.
set_path_mode() {
  local f
  f=$(path_mode_file "$1")
  echo "$2" >"$f.tmp" && mv "$f.tmp" "$f"
}

# start_path K — node K's path, unless it runs; waits (5 s) until it serves.
start_path() {
  local k=$1 d i
  [ "${PATHS:-0}" = 1 ] || return 0
  d=$(ndir "$k")
  rec_pid "$d/lunpath.pid" >/dev/null && return 0
  [ -f "$(path_mode_file "$k")" ] || set_path_mode "$k" ok
  mkdir -p "$d/run/csvfs-path"
  spawn "$k" "$d/lunpath.log" "$d/lunpath.pid" "$BIN/csvfs-lunpath" "$LUN" /run/csvfs-path.mode "$PATH_MNT"
  for ((i = 0; i < 50; i++)); do
    in_node "$k" test -f "$PATH_MNT/lun" && return 0
    rec_pid "$d/lunpath.pid" >/dev/null || break
    sleep 0.1
  done
  tail -n 5 "$d/lunpath.log" | sed 's/^/    /' >&2
  die $E_FAIL "node$k: its LUN path (csvfs-lunpath) did not come up; log: $d/lunpath.log"
}

# stop_paths — after the daemons: let hung I/O through, then SIGTERM (bounded).
stop_paths() {
  local d k pid pids=()
  for d in "$STATE"/nodes/*; do
    k=${d##*/}
    pid=$(rec_pid "$d/lunpath.pid") || continue
    set_path_mode "$k" ok 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
    pids+=("$pid")
  done
  stop_pids 5 "${pids[@]}"
}

cmd_fault() {  # cmd_fault NODE path fail|hang|ok
  local k
  need_root
  load_state
  k=$(resolve_node "${1:-}")
  [ "${2:-}" = path ] || die $E_USAGE "usage: $PROG fault NODE path fail|hang|ok"
  case ${3:-} in fail|hang|ok) ;; *) die $E_USAGE "fault: expected fail, hang or ok, not '${3:-}'" ;; esac
  [ "${PATHS:-0}" = 1 ] || die $E_STATE "lab '$INST' was started without --paths: its nodes share one path to the LUN"
  take_lock
  rec_pid "$(ndir "$k")/lunpath.pid" >/dev/null || die $E_FAIL "node$k: its LUN path (csvfs-lunpath) is not running"
  set_path_mode "$k" "$3"
  sleep 0.1   # the path reads its mode every 20 ms
  say "node$k: LUN path $3"
}

# The csvfs daemon's cluster command line lives here and only here.
start_daemon() {  # start_daemon K
  local k=$1 d opts
  d=$(ndir "$k")
  # The options the lab was brought up with, unless the caller gives others.
  local extra=${CSVFS_LAB_DAEMON_OPTS-${DAEMON_OPTS:-}}
  local lun=$VLUN
  [ "$VOL" != 1 ] || lun=$(node_lun "$k")   # --paths covers volume 1
  opts="cluster,node=$(node_name "$k"),nodeid=$k,lun=$lun,cred=/run/csvfs-cred${extra:+,$extra}"
  spawn "$k" "$d/$PIDN.log" "$d/$PIDN.pid" "$BIN/csvfs" -f -o "$opts" "UUID=$VGUID" "$MNT"
}

node_mounted() {  # node_mounted K — the volume ($MNT) is in node K's mount table
  # shellcheck disable=SC2016
  nsenter --mount="$NSDIR/n$1.mnt" -- awk -v m="$MNT" '$2 == m && $3 ~ /^fuse/ {f = 1} END {exit !f}' /proc/self/mounts 2>/dev/null
}

# prepare_mountpoint K — a private tmpfs on /ClusterStorage inside node K with
# an empty $MNT; drops a stale (dead daemon) FUSE mount first.
prepare_mountpoint() {
  local k=$1
  if [ ! -d /ClusterStorage ]; then record dir /ClusterStorage; mkdir /ClusterStorage; fi
  # shellcheck disable=SC2016
  in_node "$k" sh -c '
    if awk -v m="$1" '\''$2 == m {f = 1} END {exit !f}'\'' /proc/self/mounts; then
      umount "$1" 2>/dev/null || umount -l "$1"
    fi
    mountpoint -q /ClusterStorage || mount -t tmpfs -o size=1m,mode=0755 csvfslab /ClusterStorage
    mkdir -p "$1"' sh "$MNT"
}

start_csvfs() {  # start_csvfs K — start volume $VOL's daemon (wait_mounted waits)
  local k=$1 d pid
  d=$(ndir "$k")
  [ -n "${VGUID:-}" ] || die $E_STATE "lab '$INST' has no LUN (it was started with --no-mount and no --lun/--size)"
  if pid=$(rec_pid "$d/$PIDN.pid"); then say "node$k: csvfs for $MNT already running (pid $pid)"; return 0; fi
  [ -x "$BIN/csvfs" ] || die $E_ENV "$BIN/csvfs not found; run 'make' (or use --no-mount)"
  prepare_mountpoint "$k"
  start_path "$k"
  start_daemon "$k"
}

# wait_mounted SECONDS NODES... — every daemon mounted, or a clear failure.
wait_mounted() {
  local limit=$1 k d deadline pending
  shift
  deadline=$(($(date +%s) + limit))
  while :; do
    pending=0
    for k in "$@"; do
      d=$(ndir "$k")
      node_mounted "$k" && continue
      if ! rec_pid "$d/$PIDN.pid" >/dev/null; then
        tail -n 5 "$d/$PIDN.log" | sed 's/^/    /' >&2
        die $E_FAIL "node$k: the csvfs daemon exited without mounting $MNT (did it reject the cluster options?); log: $d/$PIDN.log"
      fi
      pending=1
    done
    [ "$pending" = 0 ] && return 0
    [ "$(date +%s)" -lt "$deadline" ] || die $E_FAIL "csvfs did not mount $MNT within $limit s on node(s): $(for k in "$@"; do node_mounted "$k" || printf '%s ' "node$k"; done)— see $STATE/nodes/*/$PIDN.log"
    sleep 0.2
  done
}

# prepare_lun — sets LUN, LUN_OWNED and GUID; formats a blank LUN.
prepare_lun() {
  local lun=$1 size=$2 type out
  if [ -z "$lun" ]; then
    lun=$DATA/$INST/lun.img
    [ "$VOL" = 1 ] || lun=$DATA/$INST/lun$VOL.img
    if [ ! -d "$DATA" ]; then record dir "$DATA"; mkdir -p "$DATA"; fi
    if [ ! -d "$DATA/$INST" ]; then record dir "$DATA/$INST"; mkdir -p "$DATA/$INST"; fi
    record file "$lun"
    rm -f "$lun"
    truncate -s "${size:-$DEFAULT_SIZE}" "$lun" || die $E_USAGE "cannot create a ${size:-$DEFAULT_SIZE} LUN at $lun"
    LUN_OWNED=1
    say "scratch LUN $lun (${size:-$DEFAULT_SIZE}, removed by down)"
  else
    lun=$(readlink -f "$lun") || die $E_USAGE "--lun $1: its directory does not exist"
    if [ ! -e "$lun" ]; then
      truncate -s "${size:-$DEFAULT_SIZE}" "$lun" || die $E_USAGE "cannot create LUN $lun"
      say "created LUN $lun (${size:-$DEFAULT_SIZE}; yours: down keeps it)"
    fi
    [ -f "$lun" ] || [ -b "$lun" ] || die $E_USAGE "--lun $lun is neither a regular file nor a block device"
    LUN_OWNED=0
  fi
  LUN=$lun
  type=$(blkid -p -o export "$lun" 2>/dev/null | sed -n 's/^\(TYPE\|PTTYPE\)=//p' | head -n 1) || true
  case $type in
    "")
      [ -x "$BIN/mkfs.csvfs" ] || die $E_ENV "$BIN/mkfs.csvfs not found; run 'make' (or use --no-mount)"
      out=$("$BIN/mkfs.csvfs" -L "Volume$VOL" "$lun" 2>&1) || { printf '    %s\n' "$out" >&2; die $E_FAIL "mkfs.csvfs $lun failed"; }
      GUID=$(blkid -p -s UUID -o value "$lun" 2>/dev/null) ||
        GUID=$(grep -Eoi '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}' <<<"$out" | head -n 1) || true
      [ -n "$GUID" ] || die $E_FAIL "mkfs.csvfs $lun printed no volume GUID"
      say "formatted $lun: volume $GUID" ;;
    ext4)
      GUID=$(blkid -p -s UUID -o value "$lun")
      say "LUN $lun holds volume $GUID (not reformatted)" ;;
    *) die $E_USAGE "LUN $lun holds a '$type' signature, not a csvfs volume; refusing to format it" ;;
  esac
}

# ----------------------------------------------------------------- commands --

write_env() {
  {
    printf 'N=%q\nCLUSTER=%q\nMOUNT=%q\nTOKEN=%q\n' "$N" "$CLUSTER" "$MOUNT" "$TOKEN"
    printf 'DAEMON_OPTS=%q\nPATHS=%q\n' "${CSVFS_LAB_DAEMON_OPTS:-}" "${PATHS:-0}"
    printf 'LUN=%q\nLUN_OWNED=%q\nGUID=%q\n' "${LUN:-}" "${LUN_OWNED:-0}" "${GUID:-}"
  } >"$STATE/lab.env.tmp"
  mv "$STATE/lab.env.tmp" "$STATE/lab.env"
}

UP_DONE=0
up_exit() {
  local rc=$?
  if [ "$UP_DONE" = 0 ] && [ -d "$STATE" ]; then
    if [ "$rc" -ge 128 ]; then warn "up interrupted; the partial lab is left for inspection (logs in $STATE/nodes/*/)."
    else warn "up failed (exit $rc); the partial lab is left for inspection (logs in $STATE/nodes/*/)."; fi
    warn "'$PROG$LABOPT status' shows it, '$PROG$LABOPT down' removes it."
  fi
}

cmd_up() {
  local lun="" size="" k d nolun=1 t0
  N=3 MOUNT=1 PATHS=0
  while [ $# -gt 0 ]; do
    case $1 in
      -n) [ $# -ge 2 ] || die $E_USAGE "-n needs a number"; N=$2; shift 2 ;;
      -n*) N=${1#-n}; shift ;;
      --lun) [ $# -ge 2 ] || die $E_USAGE "--lun needs a path"; lun=$2; nolun=0; shift 2 ;;
      --lun=*) lun=${1#--lun=}; nolun=0; shift ;;
      --size) [ $# -ge 2 ] || die $E_USAGE "--size needs a size"; size=$2; nolun=0; shift 2 ;;
      --size=*) size=${1#--size=}; nolun=0; shift ;;
      --no-mount) MOUNT=0; shift ;;
      --paths) PATHS=1; shift ;;
      *) die $E_USAGE "up: unknown argument '$1' (see '$PROG help')" ;;
    esac
  done
  if ! [[ $N =~ ^[0-9]+$ ]] || [ "$((10#$N))" -lt 1 ] || [ "$((10#$N))" -gt $MAX_NODES ]; then
    die $E_USAGE "-n must be 1..$MAX_NODES"
  fi
  N=$((10#$N))
  if ! [[ $TOKEN =~ ^[0-9]+$ ]] || [ "$TOKEN" -lt 200 ]; then
    die $E_USAGE "CSVFS_LAB_TOKEN must be a number of ms >= 200"
  fi
  [ "$MOUNT" = 1 ] && nolun=0
  need_root
  need_cmds ip nsenter unshare flock setsid mountpoint timeout awk corosync corosync-quorumtool corosync-cmapctl
  [ "$nolun" = 1 ] || need_cmds blkid truncate
  if [ "$PATHS" = 1 ]; then
    [ "$MOUNT" = 1 ] || die $E_USAGE "--paths needs a mounted volume (not --no-mount)"
    [ -x "$BIN/csvfs-lunpath" ] || die $E_ENV "$BIN/csvfs-lunpath not found; run 'make'"
  fi
  if [ ! -d /etc/corosync ] || [ ! -d /var/lib/corosync ]; then
    die $E_ENV "/etc/corosync or /var/lib/corosync is missing (corosync not installed? run 'make deps')"
  fi
  if [ "$MOUNT" = 1 ]; then
    [ -x "$BIN/csvfs" ] || die $E_ENV "$BIN/csvfs not found; run 'make' (or use --no-mount)"
  fi
  take_lock
  [ ! -e "$STATE" ] || die $E_STATE "lab '$INST' is already up (state in $STATE); run '$PROG$LABOPT down' first"
  local orphans
  orphans=$(orphan_netns)
  [ -z "$orphans" ] || die $E_STATE "namespaces from an earlier lab '$INST' remain ($(echo "$orphans" | tr '\n' ' ')); run '$PROG$LABOPT down' first"

  t0=$(date +%s)
  mkdir -p "$STATE"
  : >"$JOURNAL"
  UP_DONE=0
  trap up_exit EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  LUN="" LUN_OWNED=0 GUID=""
  write_env

  # Network: a switch namespace holding the bridge, one namespace per node.
  if [ ! -d /run/netns ]; then record dir /run/netns; fi
  if ! mountpoint -q /run/netns 2>/dev/null; then record netnsmnt /run/netns; fi
  record netns "$SW"
  ip netns add "$SW"
  ip -n "$SW" link set lo up
  ip -n "$SW" link add "$BRIDGE" type bridge || die $E_ENV "cannot create a bridge (kernel without bridge support?)"
  ip -n "$SW" link set "$BRIDGE" up
  for ((k = 1; k <= N; k++)); do
    record netns "$(node_netns "$k")"
    ip netns add "$(node_netns "$k")"
    ip -n "$(node_netns "$k")" link set lo up
    ip link add "$(node_port "$k")" netns "$SW" type veth peer name eth0 netns "$(node_netns "$k")" ||
      die $E_ENV "cannot create a veth pair (kernel without veth support?)"
    ip -n "$SW" link set "$(node_port "$k")" master "$BRIDGE" up
    ip -n "$(node_netns "$k")" addr add "$(node_addr "$k")/24" dev eth0
    ip -n "$(node_netns "$k")" link set eth0 up
    nsenter --net="/run/netns/$(node_netns "$k")" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 >/dev/null 2>&1 || true
  done

  # Mount + UTS namespaces, persisted as nsfs bind mounts under a private mount.
  # Paths the nodes need: a mount holding one of them is never detached.
  local keep
  keep=$(printf '%s\n' "$BIN" "$ROOT" "$STATE" "$DATA" "$PWD")
  if [ -n "$lun" ]; then keep+=$'\n'$(readlink -f "$(dirname "$lun")" 2>/dev/null || dirname "$lun"); fi
  record bindself "$NSDIR"
  mkdir -p "$NSDIR"
  mount --bind "$NSDIR" "$NSDIR"
  mount --make-private "$NSDIR"
  mkdir -p "$STATE/nodes"
  if command -v corosync-keygen >/dev/null 2>&1; then
    corosync-keygen -k "$STATE/authkey" >/dev/null 2>&1 || head -c 256 /dev/urandom >"$STATE/authkey"
  else
    head -c 256 /dev/urandom >"$STATE/authkey"
  fi
  chmod 0400 "$STATE/authkey"
  # The cluster credential for redirect-io (docs/protocol.md §2): one CA for
  # the lab, a certificate per node, each node's copy in its own directory.
  if [ -x "$BIN/csvctl" ]; then
    "$BIN/csvctl" keygen --cluster "$CLUSTER" --ca-dir "$STATE/ca" >/dev/null ||
      die $E_FAIL "csvctl keygen failed to create the lab's cluster credential"
  fi
  for ((k = 1; k <= N; k++)); do
    d=$(ndir "$k")
    mkdir -p "$d/etc" "$d/run" "$d/lib"
    if [ -x "$BIN/csvctl" ]; then
      "$BIN/csvctl" keygen --node "$(node_name "$k")" --ca-dir "$STATE/ca" --out "$d/run/csvfs-cred" >/dev/null ||
        die $E_FAIL "csvctl keygen failed to issue node$k's credential"
    fi
    chmod 0755 "$d/run"
    write_corosync_conf "$d/etc/corosync.conf"
    install -m 0400 "$STATE/authkey" "$d/etc/authkey"
    { cat /etc/hosts 2>/dev/null || echo "127.0.0.1 localhost"
      echo "# $PROG lab '$INST'"
      local j
      for ((j = 1; j <= N; j++)); do echo "$(node_addr "$j") $(node_name "$j")"; done
    } >"$d/hosts"
    node_name "$k" >"$d/name"
    node_addr "$k" >"$d/addr"
    : >"$d/corosync.log"
    : >"$d/csvfs.log"
    record nsfile "$NSDIR/n$k.mnt"
    record nsfile "$NSDIR/n$k.uts"
    : >"$NSDIR/n$k.mnt"
    : >"$NSDIR/n$k.uts"
    # Inside the new namespaces: hostname; private /etc/corosync,
    # /var/lib/corosync, /dev/shm (libqb IPC rings), /sys (this netns), an
    # /etc/hosts naming the nodes, and /run (corosync's lock file; bound last
    # since $d is itself under /run).
    # The new mount namespace starts as a copy of the host's mount table,
    # and a copy keeps what it holds alive: first detach what is not the
    # lab's to keep (foreign_mounts), so that a FUSE daemon or a volume
    # unmounted on the host later is really released. Propagation is
    # private: later host mounts do not reach the node either.
    # shellcheck disable=SC2016
    nsenter --net="/run/netns/$(node_netns "$k")" \
      unshare --mount="$NSDIR/n$k.mnt" --uts="$NSDIR/n$k.uts" --propagation private -- sh -euc '
        CSVFS_LAB_KEEP="$3" awk "$4" /proc/self/mountinfo >"$1/detached-mounts"
        while read -r t m; do umount -i -l -c "$m" 2>/dev/null || true; done <"$1/detached-mounts"
        hostname "$2"
        mount --bind "$1/etc" /etc/corosync
        mount --bind "$1/lib" /var/lib/corosync
        mount -t tmpfs -o mode=1777,nosuid,nodev csvfslab-shm /dev/shm
        mount -t sysfs csvfslab-sysfs /sys 2>/dev/null || true
        mount --bind "$1/hosts" /etc/hosts
        mount --bind "$1/run" /run' sh "$d" "$(node_name "$k")" "$keep" "$FOREIGN_AWK" ||
      die $E_FAIL "node$k: cannot set up its mount namespace"
  done
  local foreign
  foreign=$(awk '$1 != "nsfs" {print $2}' "$(ndir 1)/detached-mounts" 2>/dev/null | tr '\n' ' ')
  [ -z "$foreign" ] || say "node namespaces: detached host mounts the lab does not use (so they do not pin a daemon or a volume): ${foreign% }"
  say "$N nodes on $NET.0/24 ($(node_addr 1)..$(node_addr "$N")), bridge $BRIDGE in netns $SW"

  for ((k = 1; k <= N; k++)); do spawn_corosync "$k"; done
  for ((k = 1; k <= N; k++)); do wait_corosync "$k"; done
  local all=()
  for ((k = 1; k <= N; k++)); do all+=("$k"); done
  if ! wait_members "$N" "$QUORUM_TIMEOUT" "${all[@]}"; then
    for ((k = 1; k <= N; k++)); do echo "    node$k: $(quorum_line "$k" 2>/dev/null || echo 'corosync not answering')" >&2; done
    die $E_FAIL "the $N nodes did not form a quorate membership of $N within $QUORUM_TIMEOUT s; logs: $STATE/nodes/*/corosync.log"
  fi
  say "corosync: all $N nodes see $N members, quorate ($(($(date +%s) - t0)) s)"

  if [ "$nolun" = 0 ]; then
    prepare_lun "$lun" "$size"
    write_env
  fi
  if [ "$MOUNT" = 1 ]; then
    use_volume 1
    for ((k = 1; k <= N; k++)); do start_csvfs "$k"; done
    wait_mounted "$MOUNT_TIMEOUT" "${all[@]}"
    say "csvfs: volume $GUID mounted at $MNT on all $N nodes"
  fi
  UP_DONE=1
  say "lab '$INST' is up in $(($(date +%s) - t0)) s; '$PROG${LABOPT} exec 1 -- CMD' runs CMD on node1"
}

cmd_down() {
  local save="" k d f pid kind arg failed=0 pids=()
  while [ $# -gt 0 ]; do
    case $1 in
      --save-logs) [ $# -ge 2 ] || die $E_USAGE "--save-logs needs a directory"; save=$2; shift 2 ;;
      --save-logs=*) save=${1#--save-logs=}; shift ;;
      *) die $E_USAGE "down: unknown argument '$1'" ;;
    esac
  done
  if ! [[ $STOP_TIMEOUT =~ ^[0-9]+$ ]] || [ "$STOP_TIMEOUT" -lt 1 ]; then
    die $E_USAGE "CSVFS_LAB_STOP_TIMEOUT must be a number of seconds >= 1"
  fi
  need_root
  take_lock
  if [ ! -d "$STATE" ]; then
    local orphans o
    orphans=$(orphan_netns)
    if [ -n "$orphans" ]; then
      for o in $orphans; do warn "removing leftover namespace $o (no state recorded it)"; ip netns del "$o" || failed=1; done
    else
      say "no lab '$INST' is up; nothing to do"
    fi
    rmdir "$ROOT" 2>/dev/null || true
    return $failed
  fi
  N=0
  # shellcheck source=/dev/null
  [ -f "$STATE/lab.env" ] && . "$STATE/lab.env"
  [[ ${N:-0} =~ ^[0-9]+$ ]] || N=0

  # 1. csvfs daemons, while every corosync still runs (a daemon whose
  # corosync is gone loses quorum and pauses: it could not finish its clean
  # detach). The participants first, the coordinator last: a coordinator
  # that leaves first hands its role to a participant that is itself about
  # to leave (a chain of takeovers), and if that one then has to be killed
  # the volume stays dirty. The coordinator's clean unmount checkpoints the
  # journal and releases MMP.
  # Each volume on its own: its daemons are independent of the others'.
  local v
  for v in $(GUID=${GUID:-x} lab_volumes); do
    use_volume "$v"
    stop_volume_daemons
  done
  stop_paths
  # 2. corosync: SIGTERM, bounded; then kill -9.
  pids=()
  for d in "$STATE"/nodes/*; do
    if pid=$(rec_pid "$d/corosync.pid"); then kill -TERM "$pid" 2>/dev/null || true; pids+=("$pid"); fi
  done
  stop_pids 5 "${pids[@]}"
  # The logs, now that they hold the daemons' and corosyncs' last words.
  if [ -n "$save" ]; then
    mkdir -p "$save"
    for d in "$STATE"/nodes/*; do
      k=${d##*/}
      for f in corosync.log csvfs.log csvfs-v*.log etc/corosync.conf; do
        [ -f "$d/$f" ] && cp "$d/$f" "$save/node$k-${f##*/}"
      done
    done
    say "logs saved in $save"
  fi
  # 3. Processes someone else started inside the nodes: named, left alone.
  for d in "$STATE"/nodes/*; do
    k=${d##*/}
    for pid in $(ns_procs "$k"); do
      warn "node$k: pid $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-60)) still runs in the node's namespaces; not started by $PROG, left alone"
    done
  done
  # 4. Undo the journal, newest first.
  if [ -f "$JOURNAL" ]; then
    while read -r kind arg; do
      [ -n "$kind" ] || continue
      undo "$kind" "$arg" || { warn "could not remove $kind $arg"; failed=1; }
    done < <(tac "$JOURNAL")
  fi
  if [ "$failed" = 0 ]; then
    rm -rf "$STATE"
    rmdir "$ROOT" 2>/dev/null || true
    say "lab '$INST' is down"
  else
    warn "lab '$INST' is partly down; state kept in $STATE — run '$PROG$LABOPT down' again"
  fi
  return $failed
}

# stop_volume_daemons — volume $VOL's daemons: participants, then the coordinator.
stop_volume_daemons() {
  local d k role live=() parts=() coords=() unknown=()
  for d in "$STATE"/nodes/*; do
    k=${d##*/}
    rec_pid "$d/$PIDN.pid" >/dev/null && live+=("$k")
  done
  for k in "${live[@]}"; do
    role=$(node_role "$k")
    case $role in
      coordinator) coords+=("$k") ;;
      participant) parts+=("$k") ;;
      *) unknown+=("$k") ;;
    esac
  done
  stop_daemons participant "${parts[@]}"
  stop_daemons "daemon of unknown role" "${unknown[@]}"
  stop_daemons coordinator "${coords[@]}"
}

# node_role K — "coordinator" or "participant" as node K's daemon of volume $VOL says
# (csvctl status, 3 s at most), else as the last role line of its log says;
# empty when neither tells.
node_role() {
  local k=$1 d out line
  d=$(ndir "$k")
  if [ -x "$BIN/csvctl" ] && [ -e "$NSDIR/n$k.mnt" ]; then
    nsargs "$k"
    out=$(timeout -k 1 3 nsenter "${NSA[@]}" -- "$BIN/csvctl" status --json "$MNT" 2>/dev/null) || out=
    out=$(grep -o '"role":"[a-z]*"' <<<"$out" | head -n 1 | cut -d'"' -f4) || out=
    case $out in coordinator|participant) echo "$out"; return 0 ;; esac
  fi
  line=$(grep -E 'this node is now the coordinator|this node stepped down|lost the coordinator role|this node is a participant' \
    "$d/$PIDN.log" 2>/dev/null | tail -n 1) || line=
  case $line in
    *"is now the coordinator"*) echo coordinator ;;
    ?*) echo participant ;;
  esac
}

# stop_daemons ROLE K... — unmount the volume in each node K at once (fusermount3
# -u: it does not stat the mount point, which could hang on a paused
# daemon), wait up to $STOP_TIMEOUT s for every daemon to exit (a clean
# unmount ends the daemon), then kill -9 any that is left, saying so and
# what it means for the volume (ROLE: what those nodes are).
stop_daemons() {
  local role=$1 k d pid i alive out pids=() nodes=() bg=() what
  shift
  [ $# -gt 0 ] || return 0
  for k in "$@"; do
    d=$(ndir "$k")
    pid=$(rec_pid "$d/$PIDN.pid") || continue
    pids+=("$pid"); nodes+=("$k")
    [ -e "$NSDIR/n$k.mnt" ] || continue
    (
      if ! out=$(nsenter --mount="$NSDIR/n$k.mnt" -- timeout -k 1 5 fusermount3 -u "$MNT" 2>&1); then
        # Busy (a process has a file open or its working directory there) or
        # hung: detach it lazily; the daemon exits once the last user is gone.
        if nsenter --mount="$NSDIR/n$k.mnt" -- awk -v m="$MNT" '$2 == m {f = 1} END {exit !f}' /proc/self/mounts 2>/dev/null; then
          warn "node$k: cannot unmount $MNT (${out##*: }); detaching it lazily"
          nsenter --mount="$NSDIR/n$k.mnt" -- timeout -k 1 5 fusermount3 -u -z "$MNT" >/dev/null 2>&1 ||
            nsenter --mount="$NSDIR/n$k.mnt" -- timeout -k 1 5 umount -l -c "$MNT" >/dev/null 2>&1 || true
        fi
      fi
    ) &
    bg+=("$!")
  done
  [ ${#bg[@]} -eq 0 ] || wait "${bg[@]}" 2>/dev/null || true
  for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
    alive=0
    for pid in "${pids[@]}"; do
      if [ -d "/proc/$pid" ] && [ "$(proc_field "$pid" 3 2>/dev/null)" != Z ]; then alive=1; break; fi
    done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for i in "${!pids[@]}"; do
    pid=${pids[$i]}
    if [ -d "/proc/$pid" ] && [ "$(proc_field "$pid" 3 2>/dev/null)" != Z ]; then
      case $role in
        participant) what="what it had not written is lost; the coordinator still detaches the volume cleanly unless it has to be killed too" ;;
        coordinator) what="the volume will need journal recovery (MMP left held; the next mount or e2fsck -fy replays the journal)" ;;
        *) what="if it was the coordinator, the volume will need journal recovery (MMP left held; the next mount or e2fsck -fy replays the journal)" ;;
      esac
      warn "node${nodes[$i]}: its csvfs daemon of $MNT ($role, pid $pid) did not exit within $STOP_TIMEOUT s of its unmount; had to kill it (kill -9): $what"
      kill -9 "$pid" 2>/dev/null || true
      wait_gone "$pid" 5 || warn "pid $pid does not die"
    fi
  done
}

# stop_pids SECONDS PID... — wait (bounded) for our processes to exit, then kill -9.
stop_pids() {
  local limit=$1 pid i alive
  shift
  [ $# -gt 0 ] || return 0
  for ((i = 0; i < limit * 10; i++)); do
    alive=0
    for pid in "$@"; do
      if [ -d "/proc/$pid" ] && [ "$(proc_field "$pid" 3 2>/dev/null)" != Z ]; then alive=1; fi
    done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "$@"; do
    if [ -d "/proc/$pid" ] && [ "$(proc_field "$pid" 3 2>/dev/null)" != Z ]; then
      kill -9 "$pid" 2>/dev/null || true
      wait_gone "$pid" 5 || warn "pid $pid does not die"
    fi
  done
  # Dead now; give their parent (init, once up has exited) a moment to reap
  # them so a process listing right after down is clean. Bounded: 2 s.
  for ((i = 0; i < 20; i++)); do
    alive=0
    for pid in "$@"; do [ ! -d "/proc/$pid" ] || alive=1; done
    [ "$alive" = 0 ] && return 0
    sleep 0.1
  done
}

# ns_procs K — pids (other than our recorded ones) in node K's network namespace.
ns_procs() {
  local k=$1 ns p d pf ours=" "
  ns=/run/netns/$(node_netns "$k")
  [ -e "$ns" ] || return 0
  d=$(ndir "$k")
  for pf in "$d"/*.pid; do
    [ -f "$pf" ] && ours+="$(rec_pid "$pf" 2>/dev/null) "
  done
  for p in /proc/[0-9]*; do
    [ "$p/ns/net" -ef "$ns" ] || continue
    p=${p#/proc/}
    case $ours in *" $p "*) continue ;; esac
    [ "$(proc_field "$p" 3 2>/dev/null)" != Z ] || continue
    echo "$p"
  done
}

cmd_status() {
  local k d cpid fpid link q m
  need_root
  load_state
  say "lab '$INST': $N nodes, cluster $CLUSTER, token $TOKEN ms, state $STATE"
  if [ -n "${GUID:-}" ]; then echo "volume $GUID on $LUN$([ "${LUN_OWNED:-0}" = 1 ] && echo ' (scratch)'), mounted at $MNT in each node"
  else echo "no volume (--no-mount)"; fi
  printf '%-6s %-3s %-12s %-5s %-9s %-40s %-9s %s\n' NODE ID ADDRESS LINK COROSYNC 'MEMBERSHIP (as this node sees it)' CSVFS MOUNTED
  for ((k = 1; k <= N; k++)); do
    d=$(ndir "$k")
    cpid=$(rec_pid "$d/corosync.pid" 2>/dev/null) || cpid=-
    fpid=$(rec_pid "$d/csvfs.pid" 2>/dev/null) || fpid=-
    link=$(ip -n "$SW" -o link show "$(node_port "$k")" 2>/dev/null | grep -q '[<,]UP[,>]' && echo up || echo down)
    if [ "$cpid" != - ]; then q=$(quorum_line "$k" 2>/dev/null) || q="not answering"; else q=-; fi
    m=no
    node_mounted "$k" && m=yes
    [ "$m" = yes ] && [ "$fpid" = - ] && m="yes (daemon dead)"
    printf '%-6s %-3s %-12s %-5s %-9s %-40s %-9s %s\n' "node$k" "$k" "$(node_addr "$k")" "$link" "$cpid" "$q" "$fpid" "$m"
  done
  local v on
  for v in $(lab_volumes); do
    [ "$v" = 1 ] && continue
    use_volume "$v"
    on=""
    for ((k = 1; k <= N; k++)); do
      if node_mounted "$k"; then
        if rec_pid "$(ndir "$k")/$PIDN.pid" >/dev/null; then on+=" node$k"; else on+=" node$k(daemon dead)"; fi
      fi
    done
    echo "volume $v: $VGUID on $VLUN$([ "${VLUN_OWNED:-0}" = 1 ] && echo ' (scratch)') at $MNT, mounted on:${on:- no node}"
  done
}

cmd_exec() {
  local k
  need_root
  load_state
  [ $# -ge 1 ] || die $E_USAGE "usage: $PROG exec NODE -- CMD..."
  k=$(resolve_node "$1")
  shift
  [ "${1:-}" = -- ] && shift
  [ $# -ge 1 ] || set -- "${SHELL:-/bin/sh}"
  if [ ! -e "/run/netns/$(node_netns "$k")" ] || ! mountpoint -q "$NSDIR/n$k.mnt"; then
    die $E_STATE "node$k's namespaces are missing (partial lab?); see '$PROG$LABOPT status'"
  fi
  nsargs "$k"
  export CSVFS_LAB_NODE CSVFS_LAB_NODEID CSVFS_LAB_ADDR
  CSVFS_LAB_NODE=$(node_name "$k") CSVFS_LAB_NODEID=$k CSVFS_LAB_ADDR=$(node_addr "$k")
  # Keep the caller's working directory when it exists inside the node.
  # shellcheck disable=SC2016
  exec nsenter "${NSA[@]}" -- sh -c 'cd "$0" 2>/dev/null || cd /; exec "$@"' "$PWD" "$@"
}

cmd_env() {
  local k d
  load_state
  k=$(resolve_node "${1:-}")
  d=$(ndir "$k")
  printf 'CSVFS_LAB_NODE=%q\nCSVFS_LAB_NODEID=%q\nCSVFS_LAB_ADDR=%q\n' "$(node_name "$k")" "$k" "$(node_addr "$k")"
  printf 'CSVFS_LAB_NETNS=%q\nCSVFS_LAB_MNTNS=%q\nCSVFS_LAB_UTSNS=%q\n' "/run/netns/$(node_netns "$k")" "$NSDIR/n$k.mnt" "$NSDIR/n$k.uts"
  printf 'CSVFS_LAB_COROSYNC_PID=%q\nCSVFS_LAB_CSVFS_PID=%q\n' "$(rec_pid "$d/corosync.pid" || true)" "$(rec_pid "$d/csvfs.pid" || true)"
  printf 'CSVFS_LAB_DIR=%q\nCSVFS_LAB_RUN=%q\nCSVFS_LAB_CLUSTER=%q\nCSVFS_LAB_NODES=%q\n' "$d" "$d/run" "$CLUSTER" "$N"
  printf 'CSVFS_LAB_LUN=%q\nCSVFS_LAB_GUID=%q\nCSVFS_LAB_MOUNTPOINT=%q\n' "${LUN:-}" "${GUID:-}" "$MNT"
  local v vols
  vols=$(lab_volumes | tr '\n' ' ')
  printf 'CSVFS_LAB_VOLUMES=%q\n' "${vols% }"
  for v in $(lab_volumes); do
    [ "$v" = 1 ] && continue
    use_volume "$v"
    printf 'CSVFS_LAB_LUN_V%s=%q\nCSVFS_LAB_GUID_V%s=%q\nCSVFS_LAB_MOUNTPOINT_V%s=%q\nCSVFS_LAB_CSVFS_PID_V%s=%q\n' \
      "$v" "$VLUN" "$v" "$VGUID" "$v" "$MNT" "$v" "$(rec_pid "$d/$PIDN.pid" || true)"
  done
}

cmd_quorum() {
  local k d
  need_root
  load_state
  k=$(resolve_node "${1:-}")
  d=$(ndir "$k")
  rec_pid "$d/corosync.pid" >/dev/null || die $E_FAIL "node$k: corosync is not running"
  quorum_line "$k" || die $E_FAIL "node$k: corosync does not answer"
}

# daemon_names — every volume's daemon (pid file) name.
daemon_names() {
  local v
  for v in $(GUID=${GUID:-x} lab_volumes); do use_volume "$v"; echo "$PIDN"; done
}

# which_procs WHAT — the process names a kill/start argument stands for.
which_procs() {
  case ${1:-all} in
    csvfs) daemon_names ;;
    vol[0-9]*) use_volume "${1#vol}"; echo "$PIDN" ;;
    corosync) echo corosync ;;
    all) daemon_names; echo corosync ;;
    *) die $E_USAGE "expected csvfs, volV, corosync or all, not '$1'" ;;
  esac
}

cmd_kill() {
  local k what p pid d
  need_root
  load_state
  k=$(resolve_node "${1:-}")
  what=$(which_procs "${2:-all}")
  take_lock
  d=$(ndir "$k")
  # "all" is a node crash: every process gets SIGKILL before any is waited
  # for, corosync first, so the others see the node vanish (not a daemon
  # leaving cleanly ahead of its corosync).
  local pids=() names=()
  for p in $(printf '%s\n' $what | sort); do
    if pid=$(rec_pid "$d/$p.pid"); then
      kill -9 "$pid"
      pids+=("$pid"); names+=("$p")
    else
      say "node$k: $p is not running"
    fi
    rm -f "$d/$p.pid"
  done
  local i
  for i in "${!pids[@]}"; do
    wait_gone "${pids[$i]}" 5 || die $E_FAIL "node$k: ${names[$i]} pid ${pids[$i]} survives kill -9"
    say "node$k: killed ${names[$i]} (pid ${pids[$i]})"
  done
}

# A power switch: every process in NODE's network namespace gets SIGKILL,
# corosync first, and the command succeeds only once all are gone (a fence
# agent must never confirm what it did not do). No lab lock: it is what a
# node's fence_cmd runs while other lab commands may be waiting.
cmd_fence() {
  local k ns pid p pids=() d
  need_root
  load_state
  k=$(resolve_node "${1:-}")
  ns=$(node_netns "$k")
  d=$(ndir "$k")
  [ -e "/run/netns/$ns" ] || die $E_STATE "node$k: no network namespace $ns"
  if pid=$(rec_pid "$d/corosync.pid"); then kill -9 "$pid"; pids+=("$pid"); fi
  for p in $(ip netns pids "$ns"); do kill -9 "$p" 2>/dev/null && pids+=("$p"); done
  for pid in "${pids[@]}"; do
    wait_gone "$pid" 5 || die $E_FAIL "node$k: pid $pid survives kill -9; not fenced"
  done
  [ -z "$(ip netns pids "$ns")" ] || die $E_FAIL "node$k: processes remain in $ns; not fenced"
  for p in $(which_procs all); do rm -f "$d/$p.pid"; done
  say "node$k: fenced (${#pids[@]} processes killed)"
}

cmd_start() {
  local k what d v vols=()
  need_root
  load_state
  k=$(resolve_node "${1:-}")
  what=${2:-all}
  which_procs "$what" >/dev/null
  take_lock
  d=$(ndir "$k")
  case $what in csvfs|vol*) ;; *) start_corosync "$k" ;; esac
  if [ "$what" = all ] && [ -n "${GUID:-}" ] && [ "$MOUNT" = 1 ]; then
    # The daemon joins the volume's lock group: let corosync rejoin the others
    # first, or it would found a lineage of its own and be merged away.
    wait_quorate_node "$k" "$QUORUM_TIMEOUT" ||
      say "node$k: corosync is not quorate after $QUORUM_TIMEOUT s; starting csvfs anyway (it pauses until quorum)"
  fi
  case $what in
    csvfs) [ -n "${GUID:-}" ] || die $E_STATE "lab '$INST' has no LUN (it was started with --no-mount and no --lun/--size)"
           mapfile -t vols < <(lab_volumes) ;;
    vol*) vols=("${what#vol}") ;;
    all) if [ -n "${GUID:-}" ] && [ "$MOUNT" = 1 ]; then mapfile -t vols < <(lab_volumes); fi ;;
  esac
  for v in "${vols[@]}"; do
    use_volume "$v"
    start_csvfs "$k"
    wait_mounted "$MOUNT_TIMEOUT" "$k"
    say "node$k: csvfs pid $(rec_pid "$d/$PIDN.pid" || echo '?') mounted $MNT"
  done
}

# add-volume [--lun PATH | --size SIZE] — volume V (the next number) on its
# own LUN, its own daemon on every node, mounted at /ClusterStorage/VolumeV.
cmd_add_volume() {
  local lun="" size="" v k all=()
  while [ $# -gt 0 ]; do
    case $1 in
      --lun) [ $# -ge 2 ] || die $E_USAGE "--lun needs a path"; lun=$2; shift 2 ;;
      --lun=*) lun=${1#--lun=}; shift ;;
      --size) [ $# -ge 2 ] || die $E_USAGE "--size needs a size"; size=$2; shift 2 ;;
      --size=*) size=${1#--size=}; shift ;;
      *) die $E_USAGE "add-volume: unknown argument '$1' (see '$PROG help')" ;;
    esac
  done
  need_root
  need_cmds blkid truncate
  load_state
  { [ "$MOUNT" = 1 ] && [ -n "${GUID:-}" ]; } || die $E_STATE "lab '$INST' mounts no volume (--no-mount): add-volume adds a second one"
  take_lock
  v=$(( $(lab_volumes | tail -n 1) + 1 ))
  mkdir -p "$STATE/volumes"
  # prepare_lun sets LUN, LUN_OWNED and GUID: volume 1's stay in lab.env.
  local lun1=$LUN owned1=$LUN_OWNED guid1=$GUID
  VOL=$v
  prepare_lun "$lun" "$size"
  printf 'VLUN=%q\nVLUN_OWNED=%q\nVGUID=%q\n' "$LUN" "$LUN_OWNED" "$GUID" >"$STATE/volumes/$v.env"
  LUN=$lun1 LUN_OWNED=$owned1 GUID=$guid1
  use_volume "$v"
  for ((k = 1; k <= N; k++)); do start_csvfs "$k"; all+=("$k"); done
  wait_mounted "$MOUNT_TIMEOUT" "${all[@]}"
  say "csvfs: volume $v ($VGUID) mounted at $MNT on all $N nodes"
}

cmd_link() {  # cmd_link up|down NODE
  local state=$1 k
  need_root
  load_state
  k=$(resolve_node "${2:-}")
  take_lock
  ip -n "$SW" link set "$(node_port "$k")" "$state" || die $E_FAIL "node$k: cannot set its link $state"
  if [ "$state" = down ]; then say "node$k: partitioned (link down)"; else say "node$k: healed (link up)"; fi
}

# --------------------------------------------------------------------- main --

main() {
  local lab=${CSVFS_LAB:-default}
  while [ $# -gt 0 ]; do
    case $1 in
      --lab) [ $# -ge 2 ] || die $E_USAGE "--lab needs a name"; lab=$2; shift 2 ;;
      --lab=*) lab=${1#--lab=}; shift ;;
      -h|--help|help) usage; exit 0 ;;
      *) break ;;
    esac
  done
  set_instance "$lab"
  [ $# -ge 1 ] || { usage >&2; exit $E_USAGE; }
  local cmd=$1
  shift
  case $cmd in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    status) cmd_status "$@" ;;
    exec) cmd_exec "$@" ;;
    env) cmd_env "$@" ;;
    quorum) cmd_quorum "$@" ;;
    kill) cmd_kill "$@" ;;
    fence) cmd_fence "$@" ;;
    start) cmd_start "$@" ;;
    add-volume) cmd_add_volume "$@" ;;
    partition) cmd_link down "$@" ;;
    heal) cmd_link up "$@" ;;
    fault) cmd_fault "$@" ;;
    *) warn "unknown command '$cmd'"; usage >&2; exit $E_USAGE ;;
  esac
}

main "$@"
