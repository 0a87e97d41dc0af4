# shellcheck shell=bash
# Helpers shared by the crash tests (tests/integration/crash.sh, powercut.sh),
# sourced after tests/lib.sh. The caller sets: d (scratch directory), img (the
# LUN image), mnt (its mount point), log (the daemon's log), WL (the
# crash_workload binary), DPID= and LOOPS=(). fail() marks the iteration
# failed (iter_failed=1).

# start_daemon [LIMIT] — csvfs on img, in the background; with a numeric
# LIMIT, under CSVFS_FAULT_WRITE_LIMIT=LIMIT (journal/lunio.c).
start_daemon() {
	if [ -n "${1:-}" ] && [ "$1" != none ]; then
		CSVFS_FAULT_WRITE_LIMIT=$1 "$BIN/csvfs" -f -o standalone "$img" "$mnt" >>"$log" 2>&1 &
	else
		"$BIN/csvfs" -f -o standalone "$img" "$mnt" >>"$log" 2>&1 &
	fi
	DPID=$!
}
mounted() { is_mounted "$mnt"; }
daemon_alive() { [ -n "$DPID" ] && kill -0 "$DPID" 2>/dev/null; }

# wait_mount SECONDS — the mount appeared (and the daemon is still there).
wait_mount() {
	local deadline=$(( $(date +%s) + $1 ))
	while ! mounted; do
		daemon_alive || return 1
		[ "$(date +%s)" -ge "$deadline" ] && return 1
		sleep 0.1
	done
}

# kill_daemon — kill -9 the daemon we started; the mount goes away.
kill_daemon() {
	[ -n "$DPID" ] && kill -9 "$DPID" 2>/dev/null
	[ -n "$DPID" ] && wait "$DPID" 2>/dev/null
	DPID=
	grep -q " $mnt " /proc/self/mounts && umount -l "$mnt"
	return 0
}

# stop_daemon — clean unmount; the daemon must exit 0 with no sanitizer report.
stop_daemon() {
	local i status=0
	if mounted && ! fusermount3 -u "$mnt" 2>"$d/umount.err" && ! umount "$mnt" 2>>"$d/umount.err"; then
		diag "unmount failed: $(tr '\n' ' ' <"$d/umount.err")"
	fi
	for i in $(seq 1 600); do daemon_alive || break; sleep 0.1; done
	if daemon_alive; then
		diag "daemon $DPID still running 60 s after the unmount ($(grep -E '^State' "/proc/$DPID/status")); killed"
		kill -9 "$DPID"; wait "$DPID" 2>/dev/null; DPID=
		return 1
	fi
	wait "$DPID" || status=$?
	DPID=
	[ "$status" -eq 0 ] || { diag "daemon exited $status"; return 1; }
	if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$log"; then
		grep -E -A12 'Sanitizer|runtime error' "$log" | head -30 | sed 's/^/# /'
		return 1
	fi
}

# attach IMAGE [ro] — a loop device of ours (detached by detach or teardown).
attach() {
	local l
	l=$(losetup -f --show ${2:+-r} "$1") || return 1
	LOOPS+=("$l")
	echo "$l"
}
detach() {
	losetup -d "$1" 2>/dev/null
	local keep=() l
	for l in "${LOOPS[@]}"; do [ "$l" != "$1" ] && keep+=("$l"); done
	LOOPS=("${keep[@]}")
}

# detach_images IMAGE... — detach any loop device still backed by these files.
detach_images() {
	local f l
	for f in "$@"; do
		[ -f "$f" ] || continue
		for l in $(losetup -n -O NAME -j "$f" 2>/dev/null); do losetup -d "$l"; done
	done
	return 0
}

# fsck_out LABEL FILE — the interesting lines of an e2fsck log, as diagnostics.
fsck_out() {
	grep -vE '^(Pass [0-9]|e2fsck [0-9]|tune2fs [0-9]|$)' "$2" | grep -v 'could be shorter' |
		head -12 | sed "s/^/# $1: /"
}

# fsck_line LABEL IMAGE OUT — "ok - LABEL" when e2fsck -fn IMAGE is clean,
# else "not ok - LABEL" and the interesting lines: for background jobs, whose
# lines are counted when they are collected.
fsck_line() {
	if e2fsck -fn "$2" >"$3" 2>&1; then
		echo "ok - $1"
	else
		echo "not ok - $1"
		fsck_out "e2fsck -fn" "$3"
	fi
}

fail() { not_ok "$@"; iter_failed=1; }

# run_verify OUTFILE ARGS... — crash_workload verify prints the check lines.
run_verify() {
	local out=$1; shift
	"$WL" verify "$@" >"$out" 2>&1
	local rc=$?
	cat "$out"
	if [ "$rc" -ne 0 ]; then
		TEST_FAILS=$((TEST_FAILS + 1)); iter_failed=1
		grep -q '^not ok' "$out" || echo "not ok - crash_workload verify exited $rc"
	fi
}

# workload_outcome LABEL N — the workload run N's exit status (wrc) and
# stderr: a usage/local error, a live read-back mismatch, or an operation that
# failed while the daemon was alive fails the iteration.
workload_outcome() {
	local label=$1 n=$2
	[ "$wrc" -le 1 ] || fail "$label: workload exited $wrc: $(tail -2 "$d/wl.$n.err" | tr '\n' ' ')"
	[ "$wrc" -ne 1 ] || fail "$label: a live read-back differed (above)"
	if grep -q '^# crash_workload: thread' "$d/wl.$n.err"; then
		fail "$label: operations failed while the daemon was alive"
		grep -m3 '^# crash_workload: thread' "$d/wl.$n.err"
	fi
	return 0
}

# make_volume LABEL — a fresh volume with a 1 s MMP interval, so that a
# crashed holder is waited out in 3 s rather than 11 s.
make_volume() {
	"$BIN/mkfs.csvfs" -L "$1" -f -s 1G "$img" >/dev/null &&
		tune2fs -E mmp_update_interval=1 "$img" >/dev/null 2>&1
}
