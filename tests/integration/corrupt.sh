#!/usr/bin/env bash
# corrupt.sh — a corrupt volume never serves wrong data and is not made worse
# (docs/hostile-input.md). From one small populated image, each case damages
# one structure (debugfs, dd, or tests/helpers/corrupt_tool for damage inside a
# checksummed block) and mounts the copy with a standalone daemon. Then either
#   refuse:PATTERN  the mount is refused with a message matching PATTERN, or
#   serve:OBJS      it mounts; every known file reads back exactly, except the
#                   damaged objects OBJS, which fail (with EIO unless the case
#                   says otherwise); a walk, a new file, and attempts to
#                   rewrite, truncate and delete the damaged objects follow.
#   clean:          control: it mounts, every file reads back exactly, a new
#                   file is written, nothing is logged or recorded as corrupt.
# Every case: no wrong byte is ever returned, unmount finishes within 10 s,
# and e2fsck -fn finds no kind of problem afterwards it did not find before.
# A served case also checks the errors= policy: by default (remount-ro) a new
# file is refused with EROFS once the corruption was found, with
# OPTS=errors=continue it is written and reads back; and the superblock
# records the error as ext4 does (state "with errors", count, first error).
# Last, a 2-node csvfs-lab (lab name hstcorrupt) on one corrupt image: both
# nodes — the coordinator, whose engine checks, and the participant, which
# reads and writes the LUN itself at the blocks the coordinator maps — answer
# the same. CORRUPT_CASES=REGEX runs only the cases whose names match (and
# skips the lab unless it matches "lab").
source "$(dirname "$0")/../lib.sh"

S=$(scratch_dir)
on_exit "rm -rf '$S'"
LOGDIR=$TOP/$BUILD/test-logs/corrupt
mkdir -p "$LOGDIR" "$S/mnt" "$S/src"
TOOL=$TOP/$BUILD/tests/corrupt_tool
BASE=$S/base.img
M=$S/mnt

# ---- the populated image, written through csvfs; known contents in $S/src
"$BIN/mkfs.csvfs" -s 32M "$BASE" >/dev/null || { not_ok "format the base image"; finish; exit; }
head -c 65536 /dev/urandom >"$S/src/f1"
head -c 8192 /dev/urandom >"$S/src/victim"
head -c 20000 /dev/urandom >"$S/src/f2"
mkdir -p "$S/src/d1" "$S/src/d2"
echo "entry a" >"$S/src/d1/a"; echo "entry b" >"$S/src/d1/b"; echo "in d2" >"$S/src/d2/c"
# d3: 300 names, an htree of several leaves (corrupt_tool dxroot damages its index)
mkdir -p "$S/src/d3"
for i in $(seq -w 1 300); do echo "d3 $i" >"$S/src/d3/file-with-a-long-name-$i"; done
D3NAME=file-with-a-long-name-007
CSVFS_LOG=$LOGDIR/base.log mount_csvfs "$BASE" "$M" || { not_ok "mount the base image"; finish; exit; }
cp -r "$S/src/." "$M/"
# frag: 10 separate extents, so its tree has a leaf block (depth 1)
python3 - "$M/frag" "$S/src/frag" <<'EOF'
import os, sys
data = b''
fds = [os.open(p, os.O_WRONLY | os.O_CREAT, 0o644) for p in sys.argv[1:]]
for i in range(10):
    blk = os.urandom(4096)
    for fd in fds: os.pwrite(fd, blk, i * 2 * 4096)
for fd in fds: os.close(fd)
EOF
sync
umount_csvfs "$M"
KNOWN=(f1 victim f2 frag d1/a d1/b d2/c d3/$D3NAME d3/file-with-a-long-name-150 d3/file-with-a-long-name-299)
(cd "$S/src" && for f in "${KNOWN[@]}"; do sha256sum "$f"; done) >"$S/expect.sums"
check "the base image is e2fsck-clean" fsck_clean "$BASE"
check "the base image's d3 is an htree of at least 3 leaves" \
  test "$(debugfs -R 'htree /d3' "$BASE" 2>/dev/null | grep -c '^Entry #')" -ge 3
check_eq "the base image's frag has an extent tree of depth 1" 1 \
  "$(debugfs -R 'ex /frag' "$BASE" 2>/dev/null | awk '$1 ~ /^0\/ *1$/ || $1=="0/" {print 1; exit}')"

# the policy option: only continue and remount-ro
timeout 20 "$BIN/csvfs" -f -o standalone,errors=panic "$BASE" "$M" >"$S/opt.out" 2>&1 </dev/null; rc=$?
if [ "$rc" -eq 2 ] && grep -q "errors is continue or remount-ro" "$S/opt.out" && ! is_mounted "$M"; then
  ok "errors=panic is refused as a bad option (exit 2)"
else not_ok "errors=panic is refused as a bad option (exit $rc: $(head -c 200 "$S/opt.out"))"; fi

# where the metadata lies (one group: 32 MiB)
dump() { dumpe2fs "$BASE" 2>/dev/null; }
BB=$(dump | sed -n 's/^ *Block bitmap at \([0-9]*\).*/\1/p' | head -1)
IB=$(dump | sed -n 's/^ *Inode bitmap at \([0-9]*\).*/\1/p' | head -1)
IT=$(dump | sed -n 's/^ *Inode table at \([0-9]*\)-.*/\1/p' | head -1)
MMP=$(dump | sed -n 's/^MMP block number: *//p')
TOTAL=$(dump | sed -n 's/^Block count: *//p')
JB=$(debugfs -R 'ex <8>' "$BASE" 2>/dev/null | awk 'NR==2 {print $8}')
diag "block bitmap $BB, inode bitmap $IB, inode table $IT, MMP $MMP, journal from $JB, $TOTAL blocks"
[ -n "$BB" ] && [ -n "$IB" ] && [ -n "$IT" ] && [ -n "$MMP" ] && [ -n "$TOTAL" ] && [ -n "$JB" ] ||
  { not_ok "setup: read the layout of the base image"; finish; exit; }
LEAF=$(debugfs -R 'ex /frag' "$BASE" 2>/dev/null | awk 'NR==2 {print $8}')

# problem kinds: e2fsck -fn's lines with numbers, names and paths made generic
# A bitmap-differences line lists ranges: how many depends on what a dirty
# journal holds before its replay, not on a new kind of problem.
kinds() {
  e2fsck -fn "$1" 2>&1 | grep -vE '^(Pass [0-9]|e2fsck [0-9]|Running additional|$)|WARNING: Filesystem still has errors|files \(|^ *$' |
    sed -E "s#$1#IMG#g; s/'[^']*'/Q/g; s/[0-9]+/N/g; s#/[^ ]*#P#g; s/(bitmap differences:).*/\1/" | sort -u
}

# run_daemon IMG [OPTS] — starts the daemon; MOUNTED=1 when the mount appeared.
run_daemon() {
  OUT=$S/daemon.out MOUNTED=0
  "$BIN/csvfs" -f -o "standalone${2:+,$2}" "$1" "$M" >"$OUT" 2>&1 </dev/null &
  PID=$!
  local i
  for i in $(seq 1 150); do
    is_mounted "$M" && { MOUNTED=1; return; }
    kill -0 "$PID" 2>/dev/null || return
    sleep 0.1
  done
}
# stop_daemon — unmount; the daemon must exit within 10 s (else killed: not ok).
stop_daemon() {
  local name=$1 i t0
  t0=$(date +%s)
  is_mounted "$M" && { fusermount3 -u "$M" 2>/dev/null || umount -l "$M"; }
  for i in $(seq 1 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$PID" 2>/dev/null; then
    not_ok "$name: the daemon exits within 10 s of unmount"; kill -9 "$PID"
  else
    ok "$name: unmount finished in $(( $(date +%s) - t0 )) s"
  fi
  wait "$PID" 2>/dev/null
  if grep -qE 'AddressSanitizer|runtime error:' "$OUT"; then not_ok "$name: sanitizer report"; fi
}

# walk NAME DAMAGED ERRTEXT PROBES — reads every known file. Whatever comes
# back must be the file's bytes (a read that fails part-way: a prefix of
# them); a damaged object must fail with ERRTEXT, a healthy one must not fail.
walk() {
  local name=$1 damaged=" $2 " errtext=$3 probes=$4 f n bad=() refused=() wrong=()
  for f in "${KNOWN[@]}"; do
    timeout 10 cat "$M/$f" >"$S/read.out" 2>"$S/read.err"
    local rc=$?
    n=$(stat -c %s "$S/read.out")
    cmp -s "$S/read.out" <(head -c "$n" "$S/src/$f") || wrong+=("$f")
    if [ "$rc" -eq 0 ]; then
      [[ $damaged == *" $f "* ]] && bad+=("$f served")
      [ "$n" -eq "$(stat -c %s "$S/src/$f")" ] || wrong+=("$f (short: $n bytes)")
    elif [[ $damaged == *" $f "* ]]; then
      grep -q "$errtext" "$S/read.err" || bad+=("$f: $(head -c 120 "$S/read.err")")
    else
      refused+=("$f: $(head -c 120 "$S/read.err")")
    fi
  done
  for f in $probes; do
    if timeout 10 cat "$M/$f" >/dev/null 2>"$S/read.err"; then bad+=("$f served")
    else grep -q "$errtext" "$S/read.err" || bad+=("$f: $(head -c 120 "$S/read.err")"); fi
  done
  if [ ${#wrong[@]} -eq 0 ]; then ok "$name: no wrong bytes returned"
  else not_ok "$name: no wrong bytes returned (wrong: ${wrong[*]})"; fi
  if [ ${#bad[@]} -eq 0 ]; then ok "$name: the damaged objects (${2:-}${4:-}) fail with '$errtext'"
  else not_ok "$name: the damaged objects fail with '$errtext' (${bad[*]})"; fi
  if [ ${#refused[@]} -eq 0 ]; then ok "$name: every healthy file reads back exactly"
  else not_ok "$name: every healthy file reads back exactly (refused: ${refused[*]})"; fi
}

# hammer DAMAGED — what a user would try next; results do not matter here,
# only that nothing gets worse (checked by e2fsck afterwards).
hammer() {
  local f
  timeout 20 ls -laR "$M" >/dev/null 2>&1
  for f in $1; do
    timeout 10 dd if=/dev/zero of="$M/$f" bs=4096 count=2 conv=notrunc status=none 2>/dev/null
    timeout 10 truncate -s 0 "$M/$f" 2>/dev/null
    timeout 10 rm -rf "$M/$f" 2>/dev/null
    timeout 10 mv "$M/$f" "$M/$f.moved" 2>/dev/null
  done
  # a healthy file's written blocks, overwritten in place: no metadata
  # change, but refused once corruption was found under remount-ro
  head -c 4096 /dev/urandom >"$S/over"
  if timeout 10 dd if="$S/over" of="$M/f2" bs=4096 count=1 conv=notrunc status=none 2>"$S/over.err"; then
    OVEROK=1; else OVEROK=0; fi
  head -c 100000 /dev/urandom >"$S/new"
  if timeout 10 cp "$S/new" "$M/new.bin" 2>"$S/new.err" && timeout 10 cmp -s "$S/new" "$M/new.bin"; then
    NEWOK=1; else NEWOK=0; fi
}

# ino_of PATH IMG — the inode number debugfs gives PATH.
ino_of() { debugfs -R "stat $1" "$2" 2>/dev/null | sed -n 's/^Inode: *\([0-9]*\).*/\1/p'; }

# dirty_journal IMG — leaves IMG with a journal to replay: a daemon writes
# and fsyncs a file and is killed. MMP is on while it runs (the journal holds
# copies of the superblock: replay must not turn MMP off), then its block is
# marked clean as if the holder were long gone, and the flag off again for the
# rest of the setup.
dirty_journal() {
  local d=$S/dmnt pid i
  mkdir -p "$d"
  # The case's baseline: its damage without the dirty journal, whose home
  # blocks may be half written (as the kernel's may after a crash): e2fsck -n
  # does not replay, and would judge those.
  kinds "$1" >"$S/before.kinds"
  "$TOOL" mmp "$1" on || return 1
  "$BIN/csvfs" -f -o standalone "$1" "$d" >"$S/dirty.out" 2>&1 </dev/null &
  pid=$!
  for i in $(seq 1 100); do is_mounted "$d" && break; sleep 0.1; done
  is_mounted "$d" || { kill -9 "$pid"; return 1; }
  head -c 300000 /dev/urandom >"$d/dirty.bin" && sync "$d/dirty.bin" && mkdir "$d/dirty.dir"
  sync "$d"
  kill -9 "$pid"; wait "$pid" 2>/dev/null
  fusermount3 -u "$d" 2>/dev/null || umount -l "$d"
  "$TOOL" mmp "$1" clear && "$TOOL" mmp "$1" off &&
    dumpe2fs -h "$1" 2>/dev/null | grep -q needs_recovery
}

# case NAME EXPECT SETUP [OPTS] — EXPECT: refuse:PATTERN | serve:OBJS[:ERRTEXT[:PROBES]] | clean:
run_case() {
  local name=$1 expect=$2 setup=$3 opts=${4:-} img=$S/case.img before after
  cp --sparse=always "$BASE" "$img"
  rm -f "$S/before.kinds"
  if ! ("$TOOL" mmp "$img" off && eval "$setup" && "$TOOL" mmp "$img" on) >"$S/setup.out" 2>&1; then not_ok "$name: setup ($(tail -c 200 "$S/setup.out"))"; return; fi
  if [ -f "$S/before.kinds" ]; then before=$(cat "$S/before.kinds"); else before=$(kinds "$img"); fi
  [ -n "$before" ] || diag "$name: e2fsck -fn sees nothing wrong before the mount"
  run_daemon "$img" "$opts"
  case $expect in
  refuse:*)
    local pat=${expect#refuse:}
    if [ "$MOUNTED" = 1 ]; then not_ok "$name: the mount is refused (it mounted)"
    elif grep -qE -- "$pat" "$OUT"; then ok "$name: refused at mount, naming $pat"
    else not_ok "$name: refused at mount, naming '$pat' (got: $(head -c 300 "$OUT" | tr '\n' '|'))"; fi
    ;;
  clean:)
    if [ "$MOUNTED" != 1 ]; then not_ok "$name: mounts (got: $(head -c 300 "$OUT" | tr '\n' '|'))"
    else
      walk "$name" "" "Input/output error" ""
      hammer ""
      check_eq "$name: a new file is written and reads back" 1 "$NEWOK"
      check_fails "$name: nothing is logged as corrupt" grep -q 'corruption' "$OUT"
    fi
    ;;
  serve:*)
    local rest=${expect#serve:} objs errtext probes
    IFS=: read -r objs errtext probes <<<"$rest"
    if [ "$MOUNTED" != 1 ]; then not_ok "$name: mounts (got: $(head -c 300 "$OUT" | tr '\n' '|'))"
    else
      walk "$name" "$objs" "${errtext:-Input/output error}" "$probes"
      hammer "$objs $probes"
      if [ "$opts" = errors=continue ]; then
        check_eq "$name: errors=continue: a new file is written and reads back" 1 "$NEWOK"
        if [ "$OVEROK" = 1 ] && timeout 10 cmp -s -n 4096 "$S/over" "$M/f2"; then
          ok "$name: errors=continue: an overwrite of a healthy file goes through"
        else not_ok "$name: errors=continue: an overwrite of a healthy file goes through ($(head -c 150 "$S/over.err"))"; fi
      else
        if [ "$NEWOK" = 0 ] && grep -q 'Read-only file system' "$S/new.err"; then
          ok "$name: errors=remount-ro: a new file is refused with EROFS"
        else
          not_ok "$name: errors=remount-ro: a new file is refused with EROFS (got: $(head -c 150 "$S/new.err"))"
        fi
        if [ "$OVEROK" = 0 ] && grep -q 'Read-only file system' "$S/over.err" &&
           timeout 10 cmp -s "$M/f2" "$S/src/f2"; then
          ok "$name: errors=remount-ro: an overwrite of a healthy file is refused with EROFS, the file unchanged"
        else
          not_ok "$name: errors=remount-ro: an overwrite of a healthy file is refused with EROFS (got: $OVEROK $(head -c 150 "$S/over.err"))"
        fi
      fi
      check "$name: the corruption is logged, naming the inode" grep -qE 'corruption: inode [0-9]+' "$OUT"
    fi
    ;;
  esac
  stop_daemon "$name"
  cp "$OUT" "$LOGDIR/$name.log"
  if [ "$MOUNTED" = 1 ] && [ "$expect" = clean: ]; then
    check_fails "$name: the superblock records no error" sh -c "dumpe2fs -h '$img' 2>/dev/null | grep -qE 'with errors|FS Error count'"
  elif [ "$MOUNTED" = 1 ]; then
    dumpe2fs -h "$img" 2>/dev/null >"$S/sb.txt"
    if grep -q '^Filesystem state:.*with errors' "$S/sb.txt" && grep -qE '^FS Error count: *[1-9]' "$S/sb.txt" &&
       grep -qE '^First error inode #: *[0-9]+' "$S/sb.txt" && grep -q '^First error err: *EFSCORRUPTED' "$S/sb.txt"; then
      ok "$name: the superblock records the error ($(sed -n 's/^First error inode #: *//p' "$S/sb.txt" | head -1 | sed 's/^/first: inode /'))"
    else
      not_ok "$name: the superblock records the error ($(grep -iE 'state|error' "$S/sb.txt" | tr '\n' '|'))"
    fi
  fi
  after=$(kinds "$img")
  local new
  new=$(comm -13 <(echo "$before") <(echo "$after"))
  if [ -z "$new" ]; then ok "$name: e2fsck -fn finds no new kind of problem"
  else not_ok "$name: e2fsck -fn finds no new kind of problem (new: $(echo "$new" | head -5 | tr '\n' '|'))"; fi
}

T=$TOOL
while IFS='|' read -r name expect setup opts; do
  [ -z "$name" ] || [[ $name == \#* ]] && continue
  [[ $name =~ ${CORRUPT_CASES:-.} ]] || continue
  run_case "$name" "$expect" "$setup" "$opts"
done <<EOF
# controls: a healthy copy, and one with a journal to replay
control-healthy|clean:|true
dirty-journal-replayed|clean:|dirty_journal \$img
dirty-journal-and-links-count-0|serve:victim|debugfs -w -R 'sif /victim links_count 0' \$img && dirty_journal \$img
dirty-journal-and-dirent-name-len-0|serve:d1/b:No such file|\$T dirent \$img /d1 b name_len 0 && dirty_journal \$img
# file extents into the metadata zones and past the end (i_block[5] = start, [4] = start_hi<<16 | len)
extent-into-gdt|serve:victim|debugfs -w -R 'sif /victim block[5] 1' \$img
extent-into-superblock|serve:victim|debugfs -w -R 'sif /victim block[5] 0' \$img
extent-into-block-bitmap|serve:victim|debugfs -w -R 'sif /victim block[5] $BB' \$img
extent-into-inode-bitmap|serve:victim|debugfs -w -R 'sif /victim block[5] $IB' \$img
extent-into-inode-table|serve:victim|debugfs -w -R 'sif /victim block[5] $IT' \$img
extent-into-inode-table-middle|serve:victim|debugfs -w -R 'sif /victim block[5] $((IT + 40))' \$img
extent-into-journal|serve:victim|debugfs -w -R 'sif /victim block[5] $JB' \$img
extent-into-mmp|serve:victim|debugfs -w -R 'sif /victim block[5] $MMP' \$img
extent-beyond-end|serve:victim|debugfs -w -R 'sif /victim block[5] $((TOTAL + 5))' \$img
extent-start-hi-bits|serve:victim|debugfs -w -R 'sif /victim block[4] 0x70002' \$img
extent-straddles-end|serve:victim|debugfs -w -R 'sif /victim block[5] $((TOTAL - 1))' \$img
unwritten-extent-into-gdt|serve:victim|debugfs -w -R 'sif /victim block[4] 32770' \$img && debugfs -w -R 'sif /victim block[5] 1' \$img
extent-header-magic|serve:victim|debugfs -w -R 'sif /victim block[0] 0x1f30b' \$img
extent-header-depth-7|serve:victim|debugfs -w -R 'sif /victim block[1] 0x70004' \$img
extent-header-entries-5|serve:victim|debugfs -w -R 'sif /victim block[0] 0x5f30a' \$img
xattr-block-into-gdt|serve:victim|debugfs -w -R 'sif /victim file_acl 1' \$img
# extent-tree index and leaf blocks (frag has depth 1: i_block[4] = leaf block)
index-into-gdt|serve:frag|debugfs -w -R 'sif /frag block[4] 1' \$img
index-into-inode-table|serve:frag|debugfs -w -R 'sif /frag block[4] $IT' \$img
index-beyond-end|serve:frag|debugfs -w -R 'sif /frag block[4] $((TOTAL + 100))' \$img
leaf-extent-into-gdt|serve:frag|\$T leaf \$img /frag 2 pblk 1
leaf-extent-into-journal|serve:frag|\$T leaf \$img /frag 0 pblk $JB
leaf-extent-beyond-end|serve:frag|\$T leaf \$img /frag 3 pblk $((TOTAL + 1))
leaf-extents-overlap|serve:frag|\$T leaf \$img /frag 1 lblk 0
leaf-extent-len-0|serve:frag|\$T leaf \$img /frag 4 len 0
leaf-block-garbage|serve:frag|dd if=/dev/urandom of=\$img bs=4096 seek=$LEAF count=1 conv=notrunc status=none
# directory entries naming reserved or nonexistent inodes
dirent-to-journal-inode-8|serve::Input/output error:d1/jlink|debugfs -w -R 'ln <8> /d1/jlink' \$img
dirent-to-resize-inode-7|serve::Input/output error:d1/r7|debugfs -w -R 'ln <7> /d1/r7' \$img
dirent-to-badblocks-inode-1|serve::Input/output error:d1/r1|debugfs -w -R 'ln <1> /d1/r1' \$img
dirent-to-bootloader-inode-5|serve::Input/output error:d1/r5|debugfs -w -R 'ln <5> /d1/r5' \$img
dirent-to-inode-beyond-count|serve:d1/a|\$T dirent \$img /d1 a inode 999999
# link counts and sizes
links-count-0-still-linked|serve:victim|debugfs -w -R 'sif /victim links_count 0' \$img
dir-links-count-0-still-linked|serve:d2/c|debugfs -w -R 'sif /d2 links_count 0' \$img
i-size-32-PiB|serve:victim|debugfs -w -R 'sif /victim size 0x80000000000000' \$img
i-size-all-ones|serve:victim|debugfs -w -R 'sif /victim size 0xffffffffffffffff' \$img
dir-i-size-32-PiB|serve:d2/c|debugfs -w -R 'sif /d2 size 0x80000000000000' \$img
# an orphan (processed at mount) whose extent points into the GDT: not freed, the mount goes on
orphan-with-extent-into-gdt|serve:victim|debugfs -w -R 'sif /victim block[5] 1' \$img && debugfs -w -R 'sif /victim links_count 0' \$img && debugfs -w -R "ssv last_orphan \$(ino_of /victim \$img)" \$img
# directory blocks
dir-block-into-block-bitmap|serve:d1/a d1/b|debugfs -w -R 'sif /d1 block[5] $BB' \$img
dir-block-into-inode-table|serve:d1/a d1/b|debugfs -w -R 'sif /d1 block[5] $IT' \$img
dir-block-beyond-end|serve:d1/a d1/b|debugfs -w -R 'sif /d1 block[5] $((TOTAL + 9))' \$img
dir-block-garbage|serve:d1/a d1/b|dd if=/dev/urandom of=\$img bs=4096 seek=\$(debugfs -R 'bmap /d1 0' \$img 2>/dev/null) count=1 conv=notrunc status=none
dirent-rec-len-5|serve:d1/a d1/b|\$T dirent \$img /d1 a rec_len 5
dirent-rec-len-past-block|serve:d1/a d1/b|\$T dirent \$img /d1 a rec_len 8192
dirent-name-len-200|serve:d1/b:No such file|\$T dirent \$img /d1 b name_len 200
dirent-name-len-0|serve:d1/b:No such file|\$T dirent \$img /d1 b name_len 0
# htree index blocks: a bad index is found, the directory is scanned linearly (every name still found)
htree-index-points-at-root|serve:|\$T dxroot \$img /d3 $D3NAME block 0
htree-index-beyond-directory|serve:|\$T dxroot \$img /d3 $D3NAME block 900
htree-index-out-of-order|serve:|\$T dxroot \$img /d3 $D3NAME swap 0
# errors=continue: the damaged objects still fail, the rest takes changes
continue-extent-into-gdt|serve:victim|debugfs -w -R 'sif /victim block[5] 1' \$img|errors=continue
continue-links-count-0|serve:victim|debugfs -w -R 'sif /victim links_count 0' \$img|errors=continue
continue-dirent-to-journal|serve::Input/output error:d1/jlink|debugfs -w -R 'ln <8> /d1/jlink' \$img|errors=continue
# refused at mount
journal-extent-into-gdt|refuse:journal|debugfs -w -R 'sif <8> block[5] 1' \$img
journal-superblock-zeroed-needs-recovery|refuse:journal|dd if=/dev/zero of=\$img bs=4096 seek=$JB count=1 conv=notrunc status=none && debugfs -w -R 'feature needs_recovery' \$img
mmp-block-beyond-end|refuse:MMP|debugfs -w -R 'ssv mmp_block $((TOTAL + 5))' \$img
root-i-size-32-PiB|refuse:root directory|debugfs -w -R 'sif <2> size 0x80000000000000' \$img
root-not-a-directory|refuse:root directory|debugfs -w -R 'sif <2> mode 0100644' \$img
root-extent-into-inode-table|refuse:root directory|debugfs -w -R 'sif <2> block[5] $IT' \$img
gdt-inode-table-at-block-1|refuse:group descriptors|debugfs -w -R 'set_bg 0 inode_table 1' \$img
block-bitmap-frees-inode-table|refuse:block bitmap|debugfs -w -R 'freeb $((IT + 60)) 4' \$img
block-bitmap-frees-journal|refuse:block bitmap|debugfs -w -R 'freeb $JB' \$img
EOF

# ---- the same on a 2-node lab: the participant gets EIO from the coordinator
LAB="$BIN/csvfs-lab"
# A participant's O_DIRECT overwrites of blocks its layout maps need no
# coordinator: once the coordinator has found corruption (errors=remount-ro),
# the participant must refuse them too (it learns it with its next I/O state
# report, every 2 s).
lab_participant_stops_writing() {
  local c p
  c=$(timeout 60 "$LAB" exec 1 -- "$BIN/csvctl" status --json "$V" 2>/dev/null | sed -n 's/.*"coordinator":"node\([0-9]*\)".*/\1/p')
  p=$(( 3 - ${c:-1} ))
  overwrite() { timeout 20 "$LAB" exec "$p" -- dd if=/dev/zero of="$V/disk.$p" bs=4k count=1 conv=notrunc oflag=direct status=none 2>&1; }
  timeout 60 "$LAB" exec "$p" -- dd if=/dev/urandom of="$V/disk.$p" bs=64k count=16 oflag=direct conv=fsync status=none
  check_eq "lab: participant node$p overwrites its laid-out disk before the corruption is found" "" "$(overwrite)"
  timeout 60 "$LAB" exec "$c" -- sh -c "cat $V/victim >/dev/null" 2>/dev/null
  refused() { [[ $(overwrite) == *"Read-only file system"* ]]; }
  check "lab: once coordinator node$c found the corruption, node$p's overwrites are refused (EROFS)" wait_until 15 refused
  check "lab: node$p logged why" grep -q "the coordinator found corruption and refuses changes" \
    "/run/csvfs-lab/$CSVFS_LAB/nodes/$p/csvfs.log"
}
if [[ lab =~ ${CORRUPT_CASES:-.} ]] && [ -x "$LAB" ]; then
  export CSVFS_LAB=${CSVFS_TEST_LAB:-hstcorrupt}
  unset CSVFS_BIN CSVFS_LAB_TOKEN
  V=/ClusterStorage/Volume1
  img=$S/lab.img
  cp --sparse=always "$BASE" "$img"
  ("$TOOL" mmp "$img" off && debugfs -w -R 'sif /victim block[5] 1' "$img" &&
   debugfs -w -R 'ln <8> /d1/jlink' "$img" && "$TOOL" mmp "$img" on) >"$S/setup.out" 2>&1 ||
    not_ok "lab: setup ($(tail -c 200 "$S/setup.out"))"
  before=$(kinds "$img")
  "$LAB" down >/dev/null 2>&1
  on_exit "'$LAB' down --save-logs '$S/lablogs' >/dev/null 2>&1; cp -a '$S/lablogs/.' '$LOGDIR/' 2>/dev/null"
  if "$LAB" up -n 2 --lun "$img" >"$S/up.out" 2>&1; then
    ok "lab: 2 nodes serve the corrupt volume"
    lab_participant_stops_writing
    for k in 2 1; do   # node2 first: it may be the participant, and finds the corruption first
      got=$(timeout 60 "$LAB" exec "$k" -- sh -c "cat $V/victim >/dev/null" 2>&1)
      if [[ $got == *"Input/output error"* ]]; then ok "lab node$k: the extent into the GDT is EIO"
      else not_ok "lab node$k: the extent into the GDT is EIO (got: $got)"; fi
      got=$(timeout 60 "$LAB" exec "$k" -- sh -c "cat $V/d1/jlink >/dev/null" 2>&1)
      if [[ $got == *"Input/output error"* ]]; then ok "lab node$k: the entry naming the journal inode is EIO"
      else not_ok "lab node$k: the entry naming the journal inode is EIO (got: $got)"; fi
      for f in f1 frag d1/a; do
        check_eq "lab node$k: $f reads back exactly" "$(awk -v f="$f" '$2==f {print $1}' "$S/expect.sums")" \
          "$(timeout 60 "$LAB" exec "$k" -- sh -c "sha256sum < $V/$f" 2>/dev/null | cut -d' ' -f1)"
      done
      got=$(timeout 60 "$LAB" exec "$k" -- sh -c "echo x > $V/new.$k" 2>&1)
      if [[ $got == *"Read-only file system"* ]]; then ok "lab node$k: a new file is refused with EROFS (errors=remount-ro)"
      else not_ok "lab node$k: a new file is refused with EROFS (got: $got)"; fi
    done
    t0=$(date +%s)
    "$LAB" down >"$S/down.out" 2>&1 || not_ok "lab down ($(tail -n 3 "$S/down.out"))"
    diag "lab down in $(( $(date +%s) - t0 )) s"
  else
    not_ok "lab: 2 nodes serve the corrupt volume"; tail -n 20 "$S/up.out" | sed 's/^/# /'
  fi
  new=$(comm -13 <(echo "$before") <(kinds "$img"))
  if [ -z "$new" ]; then ok "lab: e2fsck -fn finds no new kind of problem"
  else not_ok "lab: e2fsck -fn finds no new kind of problem (new: $(echo "$new" | head -5 | tr '\n' '|'))"; fi
  check "lab: the superblock records the error" sh -c "dumpe2fs -h '$img' 2>/dev/null | grep -q 'with errors'"
fi

finish
