#!/usr/bin/env bash
# Power cuts (design.md §3, §11.6): the daemon runs with
# CSVFS_FAULT_WRITE_LIMIT=N, so every LUN write after the Nth is silently
# dropped while the process runs on (a power cut the process does not see;
# journal/lunio.c). A calibration run (no cut, clean unmount) counts the LUN
# writes W of one mount + workload + unmount; then for N = 1 and N spread over
# [2, W] (evenly, with jitter), a mount with the fault armed runs the same kind
# of workload to its end (crash_workload run -c LOG notes, after each
# acknowledgement, whether the daemon has announced the cut yet), the daemon
# is killed -9, and then:
#
#   * the kernel replays a copy (MMP cleared without touching the journal, a
#     read-only mount through a writable loop device): every fact acknowledged
#     before the cut holds, every file reads back, e2fsck -fn is clean after;
#   * csvfs mounts the image again without the fault (it waits out the MMP
#     heartbeat and replays): the same facts hold, the tree reads back, the
#     daemon unmounts cleanly and e2fsck -fn is clean.
#
# Facts acknowledged after the cut are not guaranteed (the workload cannot know
# which of its writes landed); for them only consistency is checked (e2fsck,
# every file readable). The facts of every earlier iteration are checked
# again each time. For a few iterations the replay itself is cut too: the
# image is mounted with CSVFS_FAULT_WRITE_LIMIT=M (the cut lands inside the
# recovery or the first commit), killed, and mounted again: recovery must be
# restartable.
#
#   POWERCUT_POINTS (24)    how many N besides N = 1
#   POWERCUT_STEP           instead: N = 1, 1+STEP, 1+2*STEP, ... up to W
#                           (POWERCUT_STEP=1: every N; long)
#   POWERCUT_LIMITS         an explicit list of N instead ("none": no cut)
#   POWERCUT_RECUT ("3 11 19") the iterations whose replay is cut too
#   POWERCUT_MAX_SECS (170) a time budget: the limits left are reported
#   POWERCUT_SEED (from the clock; printed)
#   POWERCUT_WORKLOAD_OPTS (extra "crash_workload run" options; default
#     "-j 2 -n 60": two threads, 60 operations each)
# In a mount namespace of its own: a namespace that another process creates
# meanwhile (unshare -m, e.g. a lab cluster's corosync) would otherwise get a
# copy of our FUSE mounts, which keeps each daemon alive after our unmount.
[ -n "${CSVFS_TEST_OWN_NS:-}" ] ||
	exec env CSVFS_TEST_OWN_NS=1 unshare -m --propagation private -- bash "$0" "$@"
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/../crash_lib.sh"

POINTS=${POWERCUT_POINTS:-24}
STEP=${POWERCUT_STEP:-}
RECUT=${POWERCUT_RECUT:-3 11 19}
MAX_SECS=${POWERCUT_MAX_SECS:-170}
SEED=${POWERCUT_SEED:-$(( $(date +%s) % 1000000 ))}
WL_OPTS=${POWERCUT_WORKLOAD_OPTS:--j 2 -n 60}
EVIDENCE=${POWERCUT_EVIDENCE:-$TOP/$BUILD/test-logs/powercut-evidence}
WL="$TBIN/crash_workload"
RANDOM=$SEED

d=$(scratch_dir)
img=$d/lun.img; mnt=$d/mnt; kmnt=$d/kmnt; log=$d/csvfs.log
mkdir -p "$mnt" "$kmnt"
DPID=; WPID=; LOOPS=()

if [ ! -x "$WL" ]; then
	not_ok "crash_workload is built ($WL; make $BUILD/tests/crash_workload)"
	exit 1
fi

teardown() {
	[ -n "$WPID" ] && kill -9 "$WPID" 2>/dev/null
	[ -n "$DPID" ] && kill -9 "$DPID" 2>/dev/null
	grep -q " $kmnt " /proc/self/mounts && umount "$kmnt"
	grep -q " $mnt " /proc/self/mounts && umount -l "$mnt"
	local l
	for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done
	detach_images "$d"/*.img
}
on_exit teardown

# every iteration's facts stay checked: each lives in its own directory
verify_args() {
	local k
	for k in "${done_iters[@]}" "$n"; do
		[ -f "$d/rec.$k" ] && printf '%s\n%s\n' "$1/pc$k" "$d/rec.$k"
	done
}
save_evidence() {
	local dest="$EVIDENCE/seed$SEED-limit$limit"
	mkdir -p "$dest"
	cp "$d"/rec.* "$d/wl.$n.err" "$log" "$d"/*.out "$dest/" 2>/dev/null
	[ -f "$d/crash.img" ] && cp --sparse=always "$d/crash.img" "$dest/crashed-lun.img"
	diag "limit $limit: evidence in $dest"
}

# run_workload N LABEL — crash_workload in pc<N> until it ends (bounded).
run_workload() {
	"$WL" run -s "$(( SEED * 100 + $1 ))" -t 60 -c "$log" $WL_OPTS "$mnt/pc$1" "$d/rec.$1" \
		>"$d/wl.$1.out" 2>"$d/wl.$1.err" &
	WPID=$!
	for _ in $(seq 1 900); do kill -0 "$WPID" 2>/dev/null || break; sleep 0.1; done
	kill -0 "$WPID" 2>/dev/null && { kill -9 "$WPID"; fail "$2: the workload did not finish in 90 s"; }
	wait "$WPID"; wrc=$?; WPID=
	grep -E '^(not ok|# )' "$d/wl.$1.out"
	workload_outcome "$2" "$1"
}

# kernel_replay LABEL — the kernel replays a copy of the crashed image.
kernel_replay() {
	local label=$1 loop
	cp --sparse=always "$d/crash.img" "$d/copy.img"
	"$WL" clear-mmp "$d/copy.img"
	if ! loop=$(attach "$d/copy.img"); then
		fail "$label: losetup"; return
	fi
	if mount -t ext4 -o ro "$loop" "$kmnt" 2>"$d/mount.err"; then
		mapfile -t args < <(verify_args "$kmnt")
		run_verify "$d/verify-k.out" -w -l "$label: kernel replay" "${args[@]}"
		umount "$kmnt"
		detach "$loop"
		if e2fsck -fn "$d/copy.img" >"$d/fsck-k.$n.out" 2>&1; then
			ok "$label: e2fsck -fn clean after the kernel's replay"
		else
			fail "$label: e2fsck -fn clean after the kernel's replay"; fsck_out "e2fsck -fn" "$d/fsck-k.$n.out"
		fi
	else
		fail "$label: kernel mount (replay): $(tr '\n' ' ' <"$d/mount.err")"
		detach "$loop"
	fi
	rm -f "$d/copy.img"
}

make_volume powercut || { not_ok "mkfs.csvfs; tune2fs -E mmp_update_interval=1"; exit 1; }
t_start=$(date +%s)
done_iters=()

# --- calibration: the fault armed but never reached, so it counts the writes
n=0; iter_failed=0; limit=calibration
: >"$log"
start_daemon 1000000000000
if ! wait_mount 60; then
	not_ok "calibration: mount"; tail -5 "$log" | sed 's/^/# /'; exit 1
fi
run_workload 0 "calibration"
if stop_daemon; then
	check "calibration (no cut): clean unmount, e2fsck -fn clean" fsck_clean "$img" "$d/fsck-0.out"
else
	fail "calibration (no cut): clean unmount"
fi
W=$(sed -n 's/.*fault injection: \([0-9]*\) LUN writes issued.*/\1/p' "$log" | tail -1)
if [ -z "$W" ] || [ "$W" -lt 2 ]; then
	not_ok "calibration: the daemon reported its LUN write count"; tail -3 "$log" | sed 's/^/# /'; exit 1
fi
diag "calibration: $(grep '^crash_workload: seed' "$d/wl.0.err" | sed 's/^crash_workload: //'); $W LUN writes from mount to unmount"
[ "$iter_failed" -eq 0 ] && done_iters+=(0)

if [ -n "${POWERCUT_LIMITS:-}" ]; then
	LIMITS=$POWERCUT_LIMITS
elif [ -n "$STEP" ]; then
	LIMITS=$(seq 1 "$STEP" "$W" | tr '\n' ' ')
	MAX_SECS=${POWERCUT_MAX_SECS:-1000000}
else
	LIMITS=1
	for ((k = 0; k < POINTS; k++)); do
		lo=$(( 2 + (W - 1) * k / POINTS )); hi=$(( 2 + (W - 1) * (k + 1) / POINTS ))
		LIMITS+=" $(( lo + (RANDOM * 32768 + RANDOM) % (hi - lo > 0 ? hi - lo : 1) ))"
	done
fi
diag "seed $SEED (POWERCUT_SEED=$SEED reproduces the operation sequences), limits: $(cut -c1-300 <<<"$LIMITS")"

for limit in $LIMITS; do
	n=$((n + 1)); iter_failed=0
	if [ $(( $(date +%s) - t_start )) -ge "$MAX_SECS" ]; then
		diag "time budget of ${MAX_SECS} s used up: limits from $limit on not run (POWERCUT_MAX_SECS)"
		n=$((n - 1)); break
	fi
	label="limit $limit"
	: >"$log"

	# --- the volume is clean; mount with the fault armed and run to the end
	start_daemon "$limit"
	if ! wait_mount 60; then
		fail "$label: mount with the fault armed"; tail -5 "$log" | sed 's/^/# /'; break
	fi
	run_workload "$n" "$label"
	kill_daemon
	cut_at=none
	grep -q 'power cut after' "$log" && cut_at=$(grep -c '^[SJ]' <(sed -n '1,/^CUT$/p' "$d/rec.$n"))
	diag "$label: $(grep '^crash_workload: seed' "$d/wl.$n.err" | sed 's/^crash_workload: //')$(
		[ "$cut_at" != none ] && echo "; cut after $cut_at acknowledged records")"
	cp --sparse=always "$img" "$d/crash.img"

	# --- for some iterations, cut the recovery too, then recover for real
	for m in $RECUT; do
		[ "$m" = "$n" ] || continue
		cut2=$(( 1 + RANDOM % 12 ))
		# The process runs on after the cut and may read back a block whose
		# write was dropped (e.g. the journal superblock it just marked
		# clean), so refusing to mount is as fine as coming up; dying of a
		# signal is not.
		start_daemon "$cut2"
		if wait_mount 90; then
			ok "$label: a remount whose recovery loses every write after the ${cut2}th comes up"
			grep 'journal recovery of\|journal of' "$log" | tail -1 | sed 's/.*journal \(recovery \)\{0,1\}of [^:]*: /# csvfs (cut recovery): /'
			kill_daemon
		else
			status=0
			daemon_alive && kill -9 "$DPID"
			wait "$DPID" 2>/dev/null || status=$?
			DPID=
			umount -l "$mnt" 2>/dev/null
			if [ "$status" -gt 0 ] && [ "$status" -lt 128 ]; then
				ok "$label: a remount whose recovery loses every write after the ${cut2}th refuses cleanly"
				diag "$(grep -v 'fault injection' "$log" | tail -1 | sed 's/^.*\] //')"
			else
				fail "$label: remount with CSVFS_FAULT_WRITE_LIMIT=$cut2 (exit $status)"
				tail -3 "$log" | sed 's/^/# /'
			fi
		fi
		label="limit $limit + recovery cut at $cut2"
		cp --sparse=always "$img" "$d/crash.img"
	done

	# --- csvfs recovers (after the MMP wait); meanwhile the kernel replays a copy
	start_daemon
	kernel_replay "$label"
	if ! wait_mount 90; then
		fail "$label: remount (recovery) without the fault"; tail -5 "$log" | sed 's/^/# /'
		save_evidence; break
	fi
	ok "$label: remount after the power cut replays and mounts"
	grep 'journal recovery of\|journal of' "$log" | tail -1 | sed 's/.*journal \(recovery \)\{0,1\}of [^:]*: /# csvfs: /'
	mapfile -t args < <(verify_args "$mnt")
	run_verify "$d/verify-b.out" -w -l "$label: csvfs replay" "${args[@]}"
	if stop_daemon; then
		if fsck_clean "$img" "$d/fsck-b.$n.out"; then
			ok "$label: clean unmount; e2fsck -fn clean"
		else
			fail "$label: e2fsck -fn clean after recovery and unmount"; fsck_out "e2fsck -fn" "$d/fsck-b.$n.out"
		fi
	else
		fail "$label: clean unmount after recovery"
		grep -E 'error|Sanitizer|runtime error' "$log" | tail -5 | sed 's/^/# /'
		save_evidence; break
	fi
	if [ "$iter_failed" -eq 1 ]; then
		save_evidence
		# a fresh volume: the next limits must not inherit this one's damage
		make_volume powercut || { not_ok "mkfs.csvfs"; break; }
		done_iters=()
	else
		done_iters+=("$n")
	fi
	rm -f "$d/crash.img" "$d"/*.$n.out
done
diag "power cuts: $n limits in $(( $(date +%s) - t_start )) s"
finish
