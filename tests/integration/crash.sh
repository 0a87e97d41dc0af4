#!/usr/bin/env bash
# Crash loop (design.md §3, §11.6): kill -9 the daemon at a random moment of a
# multi-threaded workload (tests/helpers/crash_workload.c: create, write +
# fsync/fdatasync/O_SYNC, rename, unlink, truncate, fallocate, mkdir/rmdir,
# xattrs, orphans; every acknowledged sync is recorded), then check that every
# acknowledged fact survived and that the volume replays to an e2fsck-clean
# state — with three independent replayers of the same crashed image:
#
#   (k) the kernel: a copy (MMP cleared without touching the journal) mounted
#       read-only through a writable loop device, so the kernel's jbd2 replays
#       csvfs's journal (and finishes the orphan list); every fact holds and
#       e2fsck -fn is clean after;
#   (b) csvfs: the crashed image itself is mounted again — it waits out the
#       stale MMP heartbeat (3 s: the test volume's MMP interval is 1 s) and
#       replays; every fact holds, every file reads back, the tree equals the
#       kernel's, the daemon unmounts cleanly and e2fsck -fn is clean;
#   (e) e2fsck -fy, in the background (a read-write e2fsck on an MMP volume
#       sleeps 11 s per open, twice when it replays): on another copy it
#       replays the journal itself with nothing to repair, e2fsck -fn is clean
#       after, every fact holds in the kernel's view of the result, and the
#       tree equals csvfs's.
#
# On the first iteration and every 10th from the 5th, also in the background,
# the operator's recovery (docs/architecture.md): "tune2fs -f -E clear_mmp"
# replays a copy with e2fsprogs' code and e2fsck -fy has nothing to repair;
# and e2fsck -p -E journal_only replays another copy without a full check;
# e2fsck -fn is clean after each. (e2fsck -fn straight after a bare replay is
# not clean when the crash left open-unlinked files: the orphan list is
# finished by the next mount or a read-write e2fsck, not by a replay.)
#
# One image is reused: each iteration works in its own directory it<N>; the
# facts of the last CRASH_KEEP iterations are checked again after every crash,
# older directories are removed. A failing iteration keeps its evidence and
# the loop goes on with a fresh volume. The loop is bounded by CRASH_ITERATIONS
# and by CRASH_MAX_SECS (default 330 s; the iterations left are reported).
#
#   CRASH_ITERATIONS (30)  CRASH_SEED (from the clock; printed)  CRASH_THREADS (4)
#   CRASH_KEEP (4)         CRASH_MAX_SECS (330)
#   CRASH_WORKLOAD_OPTS    extra "crash_workload run" options, e.g. "-x f"
#                          leaves fallocate out
#   CRASH_EVIDENCE         where failing iterations keep their crashed image,
#                          logs and records ($BUILD/test-logs/crash-evidence)
#
# The seed fixes every thread's operation sequence and the kill delays; the
# exact kill point still depends on timing. "crash_workload run -s WSEED -j 1
# -n OPS -v" replays one thread's sequence with a trace.
# In a mount namespace of its own: a namespace that another process creates
# meanwhile (unshare -m, e.g. a lab cluster's corosync) would otherwise get a
# copy of our FUSE mounts, which keeps each daemon alive after our unmount.
[ -n "${CSVFS_TEST_OWN_NS:-}" ] ||
	exec env CSVFS_TEST_OWN_NS=1 unshare -m --propagation private -- bash "$0" "$@"
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/../crash_lib.sh"

ITER=${CRASH_ITERATIONS:-30}
SEED=${CRASH_SEED:-$(( $(date +%s) % 1000000 ))}
THREADS=${CRASH_THREADS:-4}
KEEP=${CRASH_KEEP:-4}
MAX_SECS=${CRASH_MAX_SECS:-330}
WL_OPTS=${CRASH_WORKLOAD_OPTS:-}
EVIDENCE=${CRASH_EVIDENCE:-$TOP/$BUILD/test-logs/crash-evidence}
WL="$TBIN/crash_workload"
RANDOM=$SEED

d=$(scratch_dir)
img=$d/lun.img; mnt=$d/mnt; kmnt=$d/kmnt; log=$d/csvfs.log
mkdir -p "$mnt" "$kmnt"
DPID=; WPID=; LOOPS=(); JOBS=()
declare -A JOB_DIR JOB_ITER

if [ ! -x "$WL" ]; then
	not_ok "crash_workload is built ($WL; make $BUILD/tests/crash_workload)"
	exit 1
fi

# Teardown: only what this script started, mounted or attached.
teardown() {
	[ -n "$WPID" ] && kill -9 "$WPID" 2>/dev/null
	[ -n "$DPID" ] && kill -9 "$DPID" 2>/dev/null
	local j l m
	for j in "${JOBS[@]}"; do kill $(ps -o pid= --ppid "$j") "$j" 2>/dev/null; done
	for j in "${JOBS[@]}"; do wait "$j" 2>/dev/null; done
	for m in "$kmnt" "$d"/ek.*; do grep -q " $m " /proc/self/mounts && umount "$m"; done
	grep -q " $mnt " /proc/self/mounts && umount -l "$mnt"
	for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done
	detach_images "$d"/*.img "$d"/slow.*/*.img "$d"/tools.*/*.img
}
on_exit teardown

diag "seed $SEED (CRASH_SEED=$SEED reproduces it), $ITER iterations (at most ${MAX_SECS} s), $THREADS threads${WL_OPTS:+, workload options '$WL_OPTS'}"

# tick LABEL — the iteration's time line ("label:ms" since the last tick).
tick() {
	local now; now=$(date +%s%N)
	timing+=" $1:$(( (now - t_tick) / 1000000 ))ms"
	t_tick=$now
}

# verify_args ROOT — "ROOT/it<k> RECORD" pairs of the kept iterations.
verify_args() {
	local k
	for ((k = first_kept; k <= i; k++)); do
		[ -f "$d/rec.$k" ] && printf '%s\n%s\n' "$1/it$k" "$d/rec.$k"
	done
}

# save_evidence — a failing iteration keeps its crashed image (the first
# two), logs and records.
saved=0
save_evidence() {
	local n=$i
	local dest="$EVIDENCE/seed$SEED-it$n"
	mkdir -p "$dest"
	cp "$d"/rec.* "$d"/wl.$n.* "$log" "$d"/*.out "$dest/" 2>/dev/null
	if [ "$saved" -lt 2 ] && [ -f "$d/crash.img" ]; then
		cp --sparse=always "$d/crash.img" "$dest/crashed-lun.img"
		saved=$((saved + 1))
	fi
	diag "it $n: evidence in $dest (workload seed $wseed, killed after $kill_ms ms)"
}

# kernel_view IMAGE LABEL RO [MANIFEST] — mount IMAGE read-only through a loop
# device (RO=ro: a read-only device, so nothing may need replaying; else the
# kernel replays the journal), verify the kept facts, write the manifest.
kernel_view() {
	local image=$1 label=$2 ro=$3 manifest=${4:-/dev/null} loop rc=0
	if ! loop=$(attach "$image" $ro); then
		fail "$label: losetup"; return 1
	fi
	if mount -t ext4 -o ro "$loop" "$kmnt" 2>"$d/mount.err"; then
		mapfile -t args < <(verify_args "$kmnt")
		run_verify "$d/verify.out" -l "$label" "${args[@]}"
		"$WL" manifest "$kmnt/it$i" >"$manifest" 2>/dev/null
		umount "$kmnt" || rc=1
	else
		fail "$label: kernel mount: $(tr '\n' ' ' <"$d/mount.err")"; rc=1
	fi
	detach "$loop"
	return $rc
}

# job_e2fsck N DIR VERIFY-ARGS... — (e), in the background on DIR/crash.img,
# a copy of iteration N's crashed image: e2fsck -fy replays the journal
# itself. Prints its check lines into DIR/out and the tree into
# DIR/manifest.e2fsck (compared with csvfs's when the job is collected).
# Loop devices it attaches are found by image name at teardown.
job_e2fsck() {
	local n=$1 w=$2 l rc dirty=0
	local km=$d/ek.$n
	shift 2
	mkdir -p "$km"
	{
		dumpe2fs -h "$w/crash.img" 2>/dev/null | grep -q needs_recovery && dirty=1
		"$WL" clear-mmp "$w/crash.img"
		e2fsck -fy "$w/crash.img" >"$w/fsck-e.out" 2>&1; rc=$?
		if [ "$rc" -eq 0 ] && { [ "$dirty" -eq 0 ] || grep -q 'recovering journal' "$w/fsck-e.out"; }; then
			echo "ok - it $n: e2fsck -fy $([ "$dirty" -eq 1 ] && echo "replays the journal itself" || echo "(journal clean)"), nothing to repair"
		else
			echo "not ok - it $n: e2fsck -fy replaying the journal itself (exit $rc)"
			fsck_out "e2fsck -fy" "$w/fsck-e.out"
		fi
		fsck_line "it $n: e2fsck -fn clean after e2fsck's own replay" "$w/crash.img" "$w/fsck-en.out"
		l=
		if l=$(losetup -f --show -r "$w/crash.img") && mount -t ext4 -o ro "$l" "$km"; then
			"$WL" verify -l "it $n: e2fsck's own replay, kernel view" "$@" 2>&1
			"$WL" manifest "$km/it$n" >"$w/manifest.e2fsck" 2>/dev/null
			umount "$km"
		else
			echo "not ok - it $n: kernel mount of e2fsck's replay"
		fi
		[ -n "$l" ] && losetup -d "$l"
		rm -f "$w/crash.img"
	} >"$w/out" 2>&1
	rmdir "$km" 2>/dev/null
}

# job_tools N DIR — now and then, in the background on DIR/t.img and
# DIR/j.img (copies of the crashed image): the documented operator recovery
# (tune2fs -f -E clear_mmp replays with e2fsprogs' code; e2fsck -fy then has
# nothing to repair but the orphan list) and e2fsck -p -E journal_only (a
# replay without a full check, orphans finished); e2fsck -fn is clean after
# each.
job_tools() {
	local n=$1 w=$2 rc
	{
		if tune2fs -f -E clear_mmp "$w/t.img" >"$w/tune2fs.out" 2>&1; then
			e2fsck -fy "$w/t.img" >"$w/fsck-t.out" 2>&1; rc=$?
			if [ "$rc" -eq 0 ]; then
				echo "ok - it $n: after tune2fs -f -E clear_mmp's replay, e2fsck -fy has nothing to repair"
			else
				echo "not ok - it $n: after tune2fs -f -E clear_mmp's replay, e2fsck -fy exited $rc"
				fsck_out "e2fsck -fy" "$w/fsck-t.out"
			fi
			fsck_line "it $n: e2fsck -fn clean after tune2fs's replay" "$w/t.img" "$w/fsck-tn.out"
		else
			echo "not ok - it $n: tune2fs -f -E clear_mmp: $(tail -1 "$w/tune2fs.out")"
		fi
		rm -f "$w/t.img"
		"$WL" clear-mmp "$w/j.img"
		e2fsck -p -E journal_only "$w/j.img" >"$w/fsck-j.out" 2>&1; rc=$?
		if [ "$rc" -le 1 ] && ! grep -q 'Pass 1' "$w/fsck-j.out" &&
		   ! dumpe2fs -h "$w/j.img" 2>/dev/null | grep -q needs_recovery; then
			echo "ok - it $n: e2fsck -p -E journal_only replays without a full check"
		else
			echo "not ok - it $n: e2fsck -p -E journal_only (exit $rc)"
			fsck_out "journal_only" "$w/fsck-j.out"
		fi
		fsck_line "it $n: e2fsck -fn clean after the journal-only replay" "$w/j.img" "$w/fsck-jn.out"
		rm -f "$w/j.img"
	} >"$w/out" 2>&1
}

# collect_jobs [wait] — prints the results of finished background checks and
# compares e2fsck's tree with csvfs's.
collect_jobs() {
	local keep=() j w n f
	for j in "${JOBS[@]}"; do
		w=${JOB_DIR[$j]}; n=${JOB_ITER[$j]}
		if [ "${1:-}" = wait ]; then wait "$j"; elif kill -0 "$j" 2>/dev/null; then keep+=("$j"); continue; fi
		wait "$j" 2>/dev/null
		cat "$w/out"
		f=$(grep -c '^not ok' "$w/out")
		if [ -f "$w/manifest.csvfs" ]; then
			if [ -f "$w/manifest.e2fsck" ] && cmp -s "$w/manifest.e2fsck" "$w/manifest.csvfs"; then
				ok "it $n: e2fsck -fy's replay gives the same tree as csvfs's"
			else
				not_ok "it $n: e2fsck -fy's replay gives the same tree as csvfs's"
				diff "$w/manifest.csvfs" "$w/manifest.e2fsck" 2>&1 | head -6 | sed 's/^/# /'
				f=$((f + 1))
			fi
		fi
		TEST_FAILS=$((TEST_FAILS + $(grep -c '^not ok' "$w/out")))
		if [ "$f" -gt 0 ]; then
			mkdir -p "$EVIDENCE/seed$SEED-${w##*/}"; cp "$w"/*.out "$w"/manifest.* "$EVIDENCE/seed$SEED-${w##*/}/" 2>/dev/null
		fi
		rm -rf "$w"
	done
	JOBS=("${keep[@]}")
}

# a small MMP interval: a crashed holder is waited out in 3 s, not 11 s
make_volume crash || { not_ok "mkfs.csvfs; tune2fs -E mmp_update_interval=1"; exit 1; }

t_start=$(date +%s)
first_kept=1
done_iters=0
for ((i = 1; i <= ITER; i++)); do
	if [ $(( $(date +%s) - t_start )) -ge "$MAX_SECS" ]; then
		diag "time budget of ${MAX_SECS} s used up: $((ITER - i + 1)) of $ITER iterations not run (CRASH_MAX_SECS)"
		break
	fi
	iter_failed=0
	timing=; t_tick=$(date +%s%N)
	rm -f "$d"/manifest.*
	wseed=$(( SEED * 1000 + i ))
	kill_ms=$(( 100 + (RANDOM * 32768 + RANDOM) % 2900 ))
	[ $((i % 9)) -eq 0 ] && kill_ms=$(( 20 + RANDOM % 200 ))    # now and then very early

	# --- mount (the volume is clean: the previous iteration unmounted it),
	#     run the workload, kill -9 the daemon
	start_daemon
	if ! wait_mount 60; then
		not_ok "it $i: mount"; tail -5 "$log" | sed 's/^/# /'; break
	fi
	"$WL" run -s "$wseed" -j "$THREADS" -t 30 $WL_OPTS "$mnt/it$i" "$d/rec.$i" \
		>"$d/wl.$i.out" 2>"$d/wl.$i.err" &
	WPID=$!
	sleep "$(printf '%d.%03d' $((kill_ms / 1000)) $((kill_ms % 1000)))"
	kill_daemon
	for _ in $(seq 1 300); do kill -0 "$WPID" 2>/dev/null || break; sleep 0.1; done
	if kill -0 "$WPID" 2>/dev/null; then
		kill -9 "$WPID"; fail "it $i: the workload did not stop after the daemon was killed"
	fi
	wait "$WPID"; wrc=$?; WPID=
	tick run
	diag "it $i: killed after $kill_ms ms: $(grep '^crash_workload: seed' "$d/wl.$i.err" | sed 's/^crash_workload: //')"
	grep -E '^(not ok|# )' "$d/wl.$i.out"
	workload_outcome "it $i" "$i"

	# --- (b) starts now: csvfs waits out the stale MMP heartbeat, then replays
	cp --sparse=always "$img" "$d/crash.img"
	start_daemon
	tick copy

	# --- (e) e2fsck -fy on a copy, in the background; now and then the
	#     operator's tools too
	w=$d/slow.$i; mkdir -p "$w"
	cp --sparse=always "$d/crash.img" "$w/crash.img"
	vargs=(); for ((k = first_kept; k <= i; k++)); do
		[ -f "$d/rec.$k" ] && cp "$d/rec.$k" "$w/" && vargs+=("$d/ek.$i/it$k" "$w/rec.$k")
	done
	job_e2fsck "$i" "$w" "${vargs[@]}" &
	JOBS+=("$!"); JOB_DIR[$!]=$w; JOB_ITER[$!]=$i
	if [ "$i" -eq 1 ] || [ $((i % 10)) -eq 5 ]; then
		wt=$d/tools.$i; mkdir -p "$wt"
		cp --sparse=always "$d/crash.img" "$wt/t.img"
		cp --sparse=always "$d/crash.img" "$wt/j.img"
		job_tools "$i" "$wt" &
		JOBS+=("$!"); JOB_DIR[$!]=$wt; JOB_ITER[$!]=$i
	fi
	tick jobs

	# --- (k) the kernel replays another copy (and, on a read-only mount,
	#     finishes the orphan list, as csvfs does at mount)
	cp --sparse=always "$d/crash.img" "$d/copy.img"
	"$WL" clear-mmp "$d/copy.img"
	if kernel_view "$d/copy.img" "it $i: kernel replay" "" "$d/manifest.kernel"; then
		if e2fsck -fn "$d/copy.img" >"$d/fsck-k.$i.out" 2>&1; then
			ok "it $i: e2fsck -fn clean after the kernel's replay"
		else
			fail "it $i: e2fsck -fn clean after the kernel's replay"; fsck_out "e2fsck -fn" "$d/fsck-k.$i.out"
		fi
	fi
	rm -f "$d/copy.img"
	tick k

	# --- (b) csvfs's own replay
	if ! wait_mount 90; then
		fail "it $i: csvfs remount of the crashed image"
		tail -5 "$log" | sed 's/^/# /'
		save_evidence
		break
	fi
	tick mmp-wait
	grep -m1 'journal recovery of\|journal of' "$log" | sed 's/.*journal \(recovery \)\{0,1\}of [^:]*: /# csvfs: /'
	mapfile -t args < <(verify_args "$mnt")
	run_verify "$d/verify-b.out" -w -l "it $i: csvfs replay" "${args[@]}"
	"$WL" manifest "$mnt/it$i" >"$d/manifest.csvfs" 2>/dev/null
	cp "$d/manifest.csvfs" "$w/manifest.csvfs"
	if cmp -s "$d/manifest.kernel" "$d/manifest.csvfs"; then
		ok "it $i: csvfs's replay gives the same tree as the kernel's"
	else
		fail "it $i: csvfs's replay gives the same tree as the kernel's"
		diff "$d/manifest.kernel" "$d/manifest.csvfs" | head -6 | sed 's/^/# /'
	fi
	# the oldest iterations leave the volume and the cumulative check
	while [ $((i - first_kept + 1)) -gt "$KEEP" ]; do
		rm -rf "$mnt/it$first_kept" || fail "it $i: removing it$first_kept"
		rm -f "$d/rec.$first_kept" "$d/wl.$first_kept".*
		first_kept=$((first_kept + 1))
	done
	tick verify-b
	if stop_daemon; then
		if fsck_clean "$img" "$d/fsck-b.$i.out"; then
			ok "it $i: clean unmount after csvfs's replay; e2fsck -fn clean"
		else
			fail "it $i: e2fsck -fn clean after csvfs's replay and unmount"
			fsck_out "e2fsck -fn" "$d/fsck-b.$i.out"
		fi
	else
		fail "it $i: clean unmount after csvfs's replay"
		grep -E 'error|Sanitizer|runtime error' "$log" | tail -5 | sed 's/^/# /'
		save_evidence
		break
	fi
	tick umount-fsck
	diag "it $i time:$timing"
	done_iters=$i
	if [ "$iter_failed" -eq 1 ]; then
		save_evidence
		# a fresh volume: later iterations must not inherit this one's damage
		make_volume crash || { not_ok "mkfs.csvfs"; break; }
		first_kept=$((i + 1))
	fi
	rm -f "$d/crash.img" "$d"/*.$i.out
	: >"$log"
	collect_jobs
done
collect_jobs wait
diag "crash loop: $done_iters iterations in $(( $(date +%s) - t_start )) s"
[ "$done_iters" -ge "$ITER" ] || [ "$TEST_FAILS" -gt 0 ] ||
	diag "fewer iterations than asked for: the time budget ran out (CRASH_MAX_SECS=$MAX_SECS)"
finish
