# Shared helpers for integration tests (sourced). Every check prints one line,
# "ok - what" or "not ok - what"; tests/run.sh counts them. Cleanup registered
# with on_exit runs in reverse order on any exit (trap EXIT).
set -u
BUILD=${BUILD:-build}
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN="$TOP/$BUILD/bin"
TBIN="$TOP/$BUILD/tests"
TEST_FAILS=0

ok()     { echo "ok - $*"; }
not_ok() { echo "not ok - $*"; TEST_FAILS=$((TEST_FAILS + 1)); }
# check "description" cmd args...   — passes when the command exits 0
check()  { local d=$1; shift; if "$@"; then ok "$d"; else not_ok "$d"; fi; }
# check_fails "description" cmd args... — passes when the command exits non-zero
check_fails() { local d=$1; shift; if "$@"; then not_ok "$d"; else ok "$d"; fi; }
# check_eq "description" expected actual
check_eq() { if [ "$2" = "$3" ]; then ok "$1"; else not_ok "$1 (expected '$2', got '$3')"; fi; }
diag()   { echo "# $*"; }

_cleanups=()
on_exit() { _cleanups+=("$*"); }
_run_cleanups() {
  local i
  for ((i=${#_cleanups[@]}-1; i>=0; i--)); do eval "${_cleanups[$i]}" >/dev/null 2>&1 || true; done
}
trap _run_cleanups EXIT
trap 'exit 130' INT TERM

# A scratch directory removed at exit. Called as d=$(scratch_dir), i.e. in a
# subshell, so it records the directory in a list the main shell cleans up.
_SCRATCH_LIST=$(mktemp /tmp/csvfs-scratch-list.XXXXXX)
_cleanup_scratch() {
  local d
  while read -r d; do [ -n "$d" ] && rm -rf --one-file-system "$d"; done < "$_SCRATCH_LIST"
  rm -f "$_SCRATCH_LIST"
}
on_exit _cleanup_scratch
scratch_dir() { local d; d=$(mktemp -d /tmp/csvfs-test.XXXXXX); echo "$d" >> "$_SCRATCH_LIST"; echo "$d"; }

# wait_until SECONDS cmd... — polls (bounded) until cmd succeeds.
wait_until() {
  local limit=$1; shift; local deadline=$(( $(date +%s) + limit ))
  while ! "$@" 2>/dev/null; do
    [ "$(date +%s)" -ge "$deadline" ] && return 1
    sleep 0.1
  done
}

is_mounted() { grep -q " $1 fuse" /proc/self/mounts; }

# mount_csvfs LUN MNT [extra -o options] — starts the daemon in the background
# (foreground mode, so we own its pid) and waits for the mount. Sets CSVFS_PID.
# The daemon's log goes to $CSVFS_LOG (default: a file next to the LUN).
mount_csvfs() {
  local lun=$1 mnt=$2 opts=${3:-}
  mkdir -p "$mnt"
  CSVFS_LOG=${CSVFS_LOG:-$lun.csvfs.log}
  "$BIN/csvfs" -f -o "standalone${opts:+,$opts}" "$lun" "$mnt" >>"$CSVFS_LOG" 2>&1 &
  CSVFS_PID=$!
  on_exit "umount_csvfs '$mnt'"
  wait_until 20 is_mounted "$mnt" || { diag "mount of $lun on $mnt did not appear"; tail -5 "$CSVFS_LOG" | sed 's/^/# /'; return 1; }
}

# umount_csvfs MNT — unmounts and waits (bounded) for the daemon we started to
# exit. The daemon must exit 0 with no sanitizer report in its log; otherwise a
# "not ok" line says so.
umount_csvfs() {
  local mnt=$1
  is_mounted "$mnt" && { fusermount3 -u "$mnt" 2>/dev/null || umount "$mnt" 2>/dev/null || umount -l "$mnt"; }
  [ -n "${CSVFS_PID:-}" ] || return 0
  local i status=0
  for i in $(seq 1 200); do kill -0 "$CSVFS_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$CSVFS_PID" 2>/dev/null; then
    kill -9 "$CSVFS_PID" 2>/dev/null; not_ok "daemon $CSVFS_PID did not exit after unmount"
  fi
  wait "$CSVFS_PID" 2>/dev/null || status=$?
  [ "$status" -eq 0 ] || not_ok "daemon exited with status $status after unmount (log: ${CSVFS_LOG:-})"
  if [ -n "${CSVFS_LOG:-}" ] && grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$CSVFS_LOG" 2>/dev/null; then
    not_ok "sanitizer report in the daemon log"; grep -E -A20 'Sanitizer|runtime error' "$CSVFS_LOG" | head -40 | sed 's/^/# /'
  fi
  CSVFS_PID=
  return 0
}

# fsck_clean IMAGE — e2fsck -fn reports no problems.
fsck_clean() { e2fsck -fn "$1" >"${2:-/dev/null}" 2>&1; }

finish() { [ "$TEST_FAILS" -eq 0 ]; }

# lab_test_begin TEST LAB COMMAND... — how a csvfs-lab test starts: the lab
# (CSVFS_TEST_LAB overrides its name LAB, so two checkouts can run it side by
# side) with the test daemon options; a skip unless root and every COMMAND is
# installed; a scratch directory S; the lab brought down now and at exit, its
# logs kept in $BUILD/test-logs/TEST. Sets LAB, CTL and S.
lab_test_begin() {
  local test=$1 name=$2 c
  shift 2
  LAB="$BIN/csvfs-lab"
  CTL="$BIN/csvctl"
  export CSVFS_LAB=${CSVFS_TEST_LAB:-$name}
  unset CSVFS_BIN CSVFS_LAB_TOKEN
  export CSVFS_LAB_DAEMON_OPTS="fence_deadline=4000,pause_timeout=20000"
  [ "$(id -u)" -eq 0 ] || { ok "$test skipped: needs root # SKIP"; exit 0; }
  for c in corosync ip nsenter unshare e2fsck "$@"; do
    command -v "$c" >/dev/null 2>&1 || { ok "$test skipped: $c not installed (make deps) # SKIP"; exit 0; }
  done
  [ -x "$LAB" ] || { not_ok "$LAB missing"; finish; exit; }
  S=$(scratch_dir)
  on_exit "rm -rf '$S'"
  "$LAB" down >/dev/null 2>&1 || true
  on_exit "'$LAB' down --save-logs '$S/logs' >/dev/null 2>&1; mkdir -p '$TOP/$BUILD/test-logs/$test'; cp -a '$S/logs/.' '$TOP/$BUILD/test-logs/$test/' 2>/dev/null"
}

# lab_down_checked LUN — how a csvfs-lab test ends: the lab brought down (its
# logs kept in $S/logs), then the oracles that need no daemon: down
# succeeded, no daemon crashed or hit a sanitizer, e2fsck -fn clean.
lab_down_checked() {
  local lun=$1 rc
  "$LAB" down --save-logs "$S/logs" >"$S/down.out" 2>&1
  check "lab down unmounts every node" test $? -eq 0
  check "no daemon crashed or hit a sanitizer (logs)" \
    sh -c "! grep -lE 'ERROR: (Address|Leak)Sanitizer|runtime error:|Segmentation' $S/logs/*csvfs.log $S/logs/*/csvfs.log 2>/dev/null | grep -q ."
  fsck_clean "$lun" "$S/fsck.out"; rc=$?
  check_eq "e2fsck -fn is clean" 0 "$rc"
  [ "$rc" -eq 0 ] || sed 's/^/# /' "$S/fsck.out" | head -30
}

# kernel_ro_view LUN [DESC MD5 FILE]... — the kernel's own ext4, mounting the
# LUN read-only without replaying its journal, reads each FILE (relative to
# the root) with the md5 the nodes read.
kernel_ro_view() {
  local lun=$1 km=$S/kmnt
  shift
  mkdir -p "$km"
  if ! mount -o ro,loop,noload "$lun" "$km" 2>"$S/kmount.err"; then
    not_ok "kernel read-only mount of the LUN: $(cat "$S/kmount.err")"
    return
  fi
  on_exit "umount '$km' 2>/dev/null"
  while [ $# -ge 3 ]; do
    check_eq "$1" "$2" "$(md5sum <"$km/$3" | cut -d' ' -f1)"
    shift 3
  done
  umount "$km"
}
