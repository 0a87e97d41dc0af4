#!/usr/bin/env bash
# JBD2 interop: our journal writer and replayer (journal/jbd2*.c, driven by
# $BUILD/tests/jbd2_tool) against e2fsprogs and the kernel, on real ext4
# images made by mke2fs -O 64bit,metadata_csum.
#
#   A   our writer logs two transactions that wrap at the end of the log (new
#       volume name in the superblock block, a block starting with the JBD2
#       magic, a block revoked by the second transaction); e2fsck, the kernel
#       (ro mount of a loop device) and our replayer each replay a copy.
#   A2  our writer logs a 300-block transaction (two descriptors) and a torn
#       one; e2fsck and our replayer must replay the first only.
#   B   debugfs (jo -c / jw / jc) writes transactions, one of them torn and
#       one with full descriptors; our replayer replays them and must agree
#       with e2fsck replaying a copy.
#
# Runs as root (the kernel check needs a loop device; skipped otherwise).
source "$(dirname "$0")/../lib.sh"

TOOL="$TBIN/jbd2_tool"
BS=4096
# Not $(scratch_dir): its on_exit would run in the substitution's subshell.
WORK=$(mktemp -d /tmp/csvfs-test.XXXXXX)
on_exit "rm -rf '$WORK'"

if [ ! -x "$TOOL" ]; then
	not_ok "jbd2_tool is built ($TOOL; make $BUILD/tests/jbd2_tool)"
	exit 1
fi

mkimg() { mke2fs -q -F -t ext4 -O 64bit,metadata_csum,^resize_inode -b $BS "$1" 64M >/dev/null 2>&1; }
sb_field() { dumpe2fs -h "$1" 2>/dev/null | sed -n "s/^$2: *//p"; }
kv() { sed -n "s/^$1=//p" "$2"; }
block_sum() { dd if="$1" bs=$BS skip="$2" count="${3:-1}" status=none | sha256sum | cut -d' ' -f1; }
file_sum() { sha256sum "$1" | cut -d' ' -f1; }
needs_recovery() { sb_field "$1" "Filesystem features" | grep -qw needs_recovery; }
random_blocks() { head -c $(($2 * BS)) /dev/urandom >"$1"; }
journal_has_v3_64() { sb_field "$1" "Journal features" | grep -q 'journal_64bit.*journal_checksum_v3'; }
# tool_write ARGS... — jbd2_tool write, its report kept in $WORK/write.log
tool_write() { "$TOOL" write "$@" >>"$WORK/write.log"; }
# commits_seen IMAGE — commit blocks debugfs's logdump finds in the log
commits_seen() { debugfs -R logdump "$1" 2>/dev/null | grep -c 'type 2 (commit block)'; }

# kernel_replay IMAGE — ro mount through a loop device; the kernel replays the
# journal on mount. Returns 2 when the kernel check cannot run here.
kernel_replay() {
	local img=$1 mnt=$WORK/mnt loop
	if [ "$(id -u)" -ne 0 ] || ! grep -qw ext4 /proc/filesystems || ! command -v losetup >/dev/null; then
		diag "kernel replay skipped (needs root, ext4 and losetup)"
		return 2
	fi
	# Cleanup detaches only loop devices backed by our own scratch image.
	on_exit "umount '$mnt' 2>/dev/null; for l in \$(losetup -n -O NAME -j '$img'); do losetup -d \$l; done"
	loop=$(losetup -f --show "$img" 2>"$WORK/losetup.err") || {
		diag "kernel replay skipped: $(cat "$WORK/losetup.err")"
		return 2
	}
	mkdir -p "$mnt"
	if ! timeout 60 mount -t ext4 -o ro "$loop" "$mnt" 2>"$WORK/mount.err"; then
		diag "mount: $(cat "$WORK/mount.err")"
		losetup -d "$loop"
		return 1
	fi
	timeout 60 umount "$mnt"
	losetup -d "$loop"
}

# ---------------------------------------------------------------------------
# A: our writer -> e2fsck, kernel, our replayer
# ---------------------------------------------------------------------------

# expect_a WHO IMAGE — the state after a correct replay of scenario A's journal
expect_a() {
	local who=$1 img=$2
	check_eq "A/$who: volume name comes from the journal" "csvfs-A" "$(sb_field "$img" 'Filesystem volume name')"
	check_eq "A/$who: escaped block has its JBD2 magic back" "$(file_sum "$WORK/a-magic.blk")" "$(block_sum "$img" "$A_X")"
	check_eq "A/$who: block revoked by the later transaction is not replayed" "$A_Y_BEFORE" "$(block_sum "$img" "$A_Y")"
	check_eq "A/$who: block logged with the revoke is replayed" "$(file_sum "$WORK/a-z.blk")" "$(block_sum "$img" "$A_Z")"
	check_fails "A/$who: needs_recovery is cleared" needs_recovery "$img"
	check "A/$who: e2fsck -fn is clean" fsck_clean "$img" "$WORK/a-$who.fsck"
}

scenario_a() {
	local img=$WORK/a.img
	mkimg "$img" || { not_ok "A: mke2fs"; return; }
	diag "A: mke2fs journal features: $(sb_field "$img" 'Journal features')"
	check "A: jbd2_tool set-features turns on journal_64bit and journal_checksum_v3" \
		"$TOOL" set-features "$img"
	check "A: dumpe2fs shows journal_64bit and journal_checksum_v3" journal_has_v3_64 "$img"

	read -r A_X A_Y A_Z < <("$TOOL" free-blocks "$img" 3)
	A_Y_BEFORE=$(block_sum "$img" "$A_Y")
	{ printf '\300\073\071\230'; head -c $((BS - 4)) /dev/urandom; } >"$WORK/a-magic.blk"
	random_blocks "$WORK/a-y.blk" 1
	random_blocks "$WORK/a-z.blk" 1
	local sb_block maxlen
	sb_block=$("$TOOL" label-block "$img" csvfs-A "$WORK/a-label.blk")
	maxlen=$("$TOOL" info "$img" | sed -n 's/^maxlen=//p')

	# Transaction 1 starts 3 blocks before the end of the log, so its data
	# blocks and commit wrap to the start; transaction 2 revokes A_Y.
	check "A: our writer logs 2 transactions, the first wrapping at the log end" \
		tool_write "$img" --head $((maxlen - 3)) \
		"$sb_block=$WORK/a-label.blk,$A_X=$WORK/a-magic.blk,$A_Y=$WORK/a-y.blk" \
		"-$A_Y,$A_Z=$WORK/a-z.blk"
	check "A: the ext4 superblock says needs_recovery" needs_recovery "$img"
	check_eq "A: volume name unchanged before replay" "<none>" "$(sb_field "$img" 'Filesystem volume name')"
	check_eq "A: debugfs logdump finds both commit blocks" 2 "$(commits_seen "$img")"

	cp --sparse=always "$img" "$WORK/a-kernel.img"
	cp --sparse=always "$img" "$WORK/a-ours.img"

	e2fsck -fy "$img" >"$WORK/a-e2fsck.log" 2>&1
	local rc=$?
	check "A: e2fsck -fy recovers our journal (exit $rc)" test "$rc" -le 1
	check "A: e2fsck says it recovered the journal" grep -q 'recovering journal' "$WORK/a-e2fsck.log"
	expect_a e2fsck "$img"

	kernel_replay "$WORK/a-kernel.img"
	rc=$?
	if [ "$rc" -eq 0 ]; then
		ok "A: kernel ro mount replays our journal"
		expect_a kernel "$WORK/a-kernel.img"
	elif [ "$rc" -eq 1 ]; then
		not_ok "A: kernel ro mount replays our journal"
	fi

	check "A: our replayer recovers our journal" \
		sh -c "'$TOOL' replay '$WORK/a-ours.img' >'$WORK/a-ours.out'"
	check_eq "A/ours: transactions replayed" 2 "$(kv transactions "$WORK/a-ours.out")"
	check_eq "A/ours: blocks revoked" 1 "$(kv blocks_revoked "$WORK/a-ours.out")"
	check_eq "A/ours: blocks written" 3 "$(kv blocks_written "$WORK/a-ours.out")"
	check_eq "A/ours: stops at the end of the log" end-of-log "$(kv stop_reason "$WORK/a-ours.out")"
	expect_a jbd2_tool "$WORK/a-ours.img"
	check_eq "A: our next sequence equals the kernel's" \
		"$(sb_field "$WORK/a-kernel.img" 'Journal sequence')" "$(sb_field "$WORK/a-ours.img" 'Journal sequence')"
}

# ---------------------------------------------------------------------------
# A2: a 300-block transaction, then a torn one
# ---------------------------------------------------------------------------

# expect_a2 WHO IMAGE
expect_a2() {
	local who=$1 img=$2
	check_eq "A2/$who: the 300 blocks of transaction 1 are replayed" \
		"$(file_sum "$WORK/a2-big.bin")" "$(block_sum "$img" "$A2_FIRST" 300)"
	check_eq "A2/$who: the torn transaction's block is not replayed" "$A2_P_BEFORE" "$(block_sum "$img" "$A2_P")"
	check "A2/$who: e2fsck -fn is clean" fsck_clean "$img"
}

scenario_a2() {
	local img=$WORK/a2.img
	mkimg "$img" && "$TOOL" set-features "$img" >/dev/null || { not_ok "A2: make image"; return; }
	local free
	free=$("$TOOL" free-blocks "$img" 301)
	A2_P=$(awk '{print $1}' <<<"$free")
	A2_FIRST=$(awk '{print $NF}' <<<"$free")
	check_eq "A2: the 300 blocks below the last free one are free" "$((A2_P - 300))" "$A2_FIRST"
	A2_P_BEFORE=$(block_sum "$img" "$A2_P")
	random_blocks "$WORK/a2-big.bin" 300
	random_blocks "$WORK/a2-p.blk" 1
	# Transaction 2 revokes a block of transaction 1 and logs A2_P, but its
	# commit block is never written: neither may take effect.
	check "A2: our writer logs a 300-block transaction and a torn one" \
		tool_write "$img" --torn "$A2_FIRST+300=$WORK/a2-big.bin" "-$A2_FIRST,$A2_P=$WORK/a2-p.blk"
	cp --sparse=always "$img" "$WORK/a2-ours.img"

	e2fsck -fy "$img" >/dev/null 2>&1
	check "A2: e2fsck -fy recovers our journal" test $? -le 1
	expect_a2 e2fsck "$img"

	"$TOOL" replay "$WORK/a2-ours.img" >"$WORK/a2-ours.out"
	check "A2: our replayer succeeds" test $? -eq 0
	check_eq "A2/ours: one transaction replayed" 1 "$(kv transactions "$WORK/a2-ours.out")"
	check_eq "A2/ours: stops at the torn transaction" no-commit "$(kv stop_reason "$WORK/a2-ours.out")"
	check_eq "A2/ours: names the torn transaction" 2 "$(kv stop_transaction "$WORK/a2-ours.out")"
	expect_a2 jbd2_tool "$WORK/a2-ours.img"
}

# ---------------------------------------------------------------------------
# B: debugfs writes -> our replayer (and e2fsck on a copy, to compare)
# ---------------------------------------------------------------------------

# b_state IMAGE — the blocks scenario B touches, as one line of checksums
b_state() {
	echo "$(sb_field "$1" 'Filesystem volume name') $(block_sum "$1" "$B_X") $(block_sum "$1" "$B_Y")" \
		"$(block_sum "$1" "$B_FIRST" 300) $(block_sum "$1" "$B_Z")"
}

scenario_b() {
	local img=$WORK/b.img
	mkimg "$img" || { not_ok "B: mke2fs"; return; }
	local free sb_block
	free=$("$TOOL" free-blocks "$img" 303)
	read -r B_X B_Y B_Z _ <<<"$free"
	B_FIRST=$(awk '{print $NF}' <<<"$free")
	check_eq "B: 300 contiguous free blocks below the first three" "$((B_Z - 300))" "$B_FIRST"
	local y_before z_before
	y_before=$(block_sum "$img" "$B_Y")
	z_before=$(block_sum "$img" "$B_Z")
	sb_block=$("$TOOL" label-block "$img" csvfs-B "$WORK/b-label.blk")
	random_blocks "$WORK/b-x.blk" 1
	random_blocks "$WORK/b-y.blk" 1
	random_blocks "$WORK/b-z.blk" 1
	random_blocks "$WORK/b-big.bin" 300
	cat "$WORK/b-label.blk" "$WORK/b-x.blk" >"$WORK/b-two.blk"
	# 1: label + X; 2: Y; 3: revoke Y; 4: 300 blocks (full descriptors);
	# 5: Z, not committed (-c).
	cat >"$WORK/b.cmds" <<-EOF
		jo -c
		jw -b $sb_block,$B_X $WORK/b-two.blk
		jw -b $B_Y $WORK/b-y.blk
		jw -r $B_Y
		jw -b $B_FIRST-$((B_FIRST + 299)) $WORK/b-big.bin
		jw -b $B_Z -c $WORK/b-z.blk
		jc
	EOF
	debugfs -w -f "$WORK/b.cmds" "$img" >"$WORK/b-debugfs.log" 2>&1
	check "B: debugfs wrote the transactions" grep -q 'Setting csum v3' "$WORK/b-debugfs.log"
	check "B: debugfs turned on journal_64bit and journal_checksum_v3" journal_has_v3_64 "$img"
	check "B: the ext4 superblock says needs_recovery" needs_recovery "$img"
	cp --sparse=always "$img" "$WORK/b-e2fsck.img"

	local before
	before=$(file_sum "$img")
	"$TOOL" replay "$img" --dry-run >"$WORK/b-dry.out"
	check_eq "B: a dry run finds 4 complete transactions" 4 "$(kv transactions "$WORK/b-dry.out")"
	check_eq "B: a dry run changes nothing" "$before" "$(file_sum "$img")"

	"$TOOL" replay "$img" >"$WORK/b-ours.out"
	check "B: our replayer recovers the debugfs journal" test $? -eq 0
	check_eq "B/ours: transactions replayed" 4 "$(kv transactions "$WORK/b-ours.out")"
	check_eq "B/ours: blocks written" 302 "$(kv blocks_written "$WORK/b-ours.out")"
	check_eq "B/ours: blocks revoked" 1 "$(kv blocks_revoked "$WORK/b-ours.out")"
	check_eq "B/ours: stops at the uncommitted transaction" no-commit "$(kv stop_reason "$WORK/b-ours.out")"
	check_eq "B/ours: names it" 5 "$(kv stop_transaction "$WORK/b-ours.out")"
	check_eq "B/ours: volume name comes from the journal" csvfs-B "$(sb_field "$img" 'Filesystem volume name')"
	check_eq "B/ours: logged block replayed" "$(file_sum "$WORK/b-x.blk")" "$(block_sum "$img" "$B_X")"
	check_eq "B/ours: revoked block not replayed" "$y_before" "$(block_sum "$img" "$B_Y")"
	check_eq "B/ours: 300-block transaction replayed" "$(file_sum "$WORK/b-big.bin")" "$(block_sum "$img" "$B_FIRST" 300)"
	check_eq "B/ours: uncommitted block not replayed" "$z_before" "$(block_sum "$img" "$B_Z")"
	check_fails "B/ours: needs_recovery is cleared" needs_recovery "$img"
	check_eq "B/ours: journal is clean (start 0)" 0 "$(sb_field "$img" 'Journal start')"
	check "B/ours: e2fsck -fn is clean" fsck_clean "$img" "$WORK/b-ours.fsck"

	e2fsck -fy "$WORK/b-e2fsck.img" >/dev/null 2>&1
	check "B: e2fsck -fy recovers a copy" test $? -le 1
	check_eq "B: our replay and e2fsck's leave the same blocks" "$(b_state "$WORK/b-e2fsck.img")" "$(b_state "$img")"
}

scenario_a
scenario_a2
scenario_b
finish
