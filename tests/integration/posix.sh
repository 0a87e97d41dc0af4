#!/usr/bin/env bash
# posix.sh — single-node POSIX semantics through a real mount of a csvfs volume,
# then the oracles: e2fsck -fn, and a kernel read-only mount that must show the
# same tree (manifest: path, type, mode, owner, size, nlink, mtime, content
# digest, xattrs, symlink targets, hard-link groups) as the csvfs mount did.
#
#   POSIX_TARGET=csvfs   (default) build/bin/mkfs.csvfs + build/bin/csvfs -o standalone
#   POSIX_TARGET=ext4    reference: mkfs.ext4 + the kernel's ext4 on a loop device
#   POSIX_TARGET=fuse2fs reference: mkfs.ext4 + fuse2fs
source "$(dirname "$0")/../lib.sh"

TARGET=${POSIX_TARGET:-csvfs}
SCRATCH=$(scratch_dir)
on_exit "rm -rf '$SCRATCH'"   # scratch_dir's own on_exit ran in the $(...) subshell and is lost
IMG=$SCRATCH/lun.img
MNT=$SCRATCH/mnt
KMNT=$SCRATCH/kmnt
OPS=$TBIN/posix_ops
LOGDIR=$TOP/$BUILD/test-logs
mkdir -p "$LOGDIR" "$MNT" "$KMNT"
chmod 0755 "$SCRATCH"   # the unprivileged user must reach the mount point
export CSVFS_LOG=$LOGDIR/posix-daemon.log
: >"$CSVFS_LOG"
NOBODY=(setpriv --reuid=65534 --regid=65534 --clear-groups)
START=$(date +%s)
diag "target: $TARGET"

# ---------------------------------------------------------------- target plumbing
detach_img() {  # every loop device backed by our image (it lives in our scratch dir)
  local d i
  for d in $(losetup -l -n -O NAME -j "$1" 2>/dev/null); do losetup -d "$d"; done
  # the kernel may finish a detach asynchronously: wait (bounded) until it has
  for i in $(seq 1 50); do [ -z "$(losetup -j "$1" 2>/dev/null)" ] && break; sleep 0.1; done
}
umount_if() { mountpoint -q "$1" && umount "$1"; return 0; }
on_exit "detach_img '$IMG'"

t_mkfs() {  # IMG SIZE
  case $TARGET in
    csvfs) "$BIN/mkfs.csvfs" -s "$2" "$1" ;;
    *) truncate -s "$2" "$1" && mkfs.ext4 -q -F "$1" ;;
  esac
}

t_mount() {  # IMG MNT [extra options]
  local opts="allow_other,default_permissions${3:+,$3}"
  case $TARGET in
    csvfs) mount_csvfs "$1" "$2" "$opts" ;;
    fuse2fs)
      fuse2fs "$1" "$2" -f -o "$opts" >>"$CSVFS_LOG" 2>&1 &
      CSVFS_PID=$!
      on_exit "umount_csvfs '$2'"
      wait_until 20 is_mounted "$2" ;;
    ext4)
      local dev ro=rw
      [[ ,$opts, == *,ro,* ]] && ro=ro
      dev=$(losetup -f --show "$1") || return 1
      on_exit "umount_if '$2'"
      mount -t ext4 -o "$ro" "$dev" "$2" ;;
  esac
}

t_umount() {  # MNT — unmount; for a daemon, check it exits by itself with status 0
  local mnt=$1 rc i
  if [ "$TARGET" = ext4 ]; then
    umount "$mnt" && detach_img "$IMG"
    return
  fi
  timeout 20 fusermount3 -u "$mnt" 2>/dev/null || timeout 20 umount "$mnt" 2>/dev/null || umount -l "$mnt"
  local t0=$SECONDS
  for i in $(seq 1 600); do kill -0 "$CSVFS_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$CSVFS_PID" 2>/dev/null; then
    not_ok "the daemon exits within 60 s of unmount (still running; killed)"
    kill -9 "$CSVFS_PID" 2>/dev/null
  else
    diag "the daemon exited $((SECONDS - t0)) s after unmount"
  fi
  wait "$CSVFS_PID"; rc=$?
  check_eq "the daemon exits with status 0 after unmount of $mnt" 0 "$rc"
  CSVFS_PID=
}

k_mount_ro() {  # IMG MNT — the kernel oracle
  local dev
  dev=$(losetup -f --show -r "$1") || return 1
  on_exit "umount_if '$2'"
  mount -t ext4 -o ro,noload "$dev" "$2"
}
k_umount() { umount "$1"; detach_img "$IMG"; }

daemon_log_tail() { [ -s "$CSVFS_LOG" ] && tail -n 15 "$CSVFS_LOG" | sed 's/^/#   log: /'; return 0; }

# run_ops TIMEOUT ARGS... — runs posix_ops; its "not ok" lines count as ours.
run_ops() {
  local limit=$1 out rc f; shift
  out=$(mktemp "$SCRATCH/ops.XXXXXX")
  timeout "$limit" "$OPS" "$@" >"$out" 2>&1; rc=$?
  cat "$out"
  f=$(grep -c '^not ok' "$out")
  TEST_FAILS=$((TEST_FAILS + f))
  if [ "$rc" -ge 124 ]; then
    not_ok "posix_ops $* ended by timeout or signal (status $rc)"
  elif [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    not_ok "posix_ops $* exited $rc"
  fi
  return "$rc"
}

# manifest ROOT OUT — everything but bigdir/ (compared separately). Bounded: a
# hung mount must not hang the test.
MANIFEST_SH='
cd "$1" || exit 1
find . -path ./bigdir -prune -o -printf "%y %#m %U %G %s %b %n %T@ %p -> %l\n" | LC_ALL=C sort
echo "== content"
find . -path ./bigdir -prune -o -type f -print0 | LC_ALL=C sort -z | xargs -0 -r "$2" treesum
echo "== xattrs"
find . -path ./bigdir -prune -o -print0 | LC_ALL=C sort -z | xargs -0 -r getfattr -h -d -m - -e hex 2>&1
echo "== hard-link groups"
find . -path ./bigdir -prune -o ! -type d -links +1 -printf "%i %p\n" | LC_ALL=C sort -k2 |
  awk "{ g[\$1] = g[\$1] \" \" \$2 } END { for (i in g) print g[i] }" | LC_ALL=C sort
'
manifest() {
  timeout 180 bash -c "$MANIFEST_SH" manifest "$1" "$OPS" >"$2" 2>&1 || echo "manifest of $1 failed or timed out" >>"$2"
}

# alive WHAT — the mount still answers and the daemon still runs; else stop here.
alive() {
  if [ -n "${CSVFS_PID:-}" ] && ! kill -0 "$CSVFS_PID" 2>/dev/null; then
    not_ok "the daemon is still running after $1"; daemon_log_tail; finish; exit
  fi
  if ! timeout 20 stat "$MNT/." >/dev/null 2>&1; then
    not_ok "the mount still answers after $1"; daemon_log_tail; finish; exit
  fi
}

compare_manifests() {  # DESCRIPTION A B
  if diff -u "$2" "$3" >"$SCRATCH/manifest.diff"; then
    ok "$1 ($(grep -c '' "$2") lines)"
  else
    not_ok "$1"
    head -n 40 "$SCRATCH/manifest.diff" | cat -v | sed 's/^/#   /'
  fi
}

# ---------------------------------------------------------------- format, mount
if ! t_mkfs "$IMG" 2G >"$SCRATCH/mkfs.out" 2>&1; then
  not_ok "format a 2 GiB volume"; sed 's/^/#   /' "$SCRATCH/mkfs.out"; finish; exit
fi
ok "format a 2 GiB volume"
if ! t_mount "$IMG" "$MNT"; then
  not_ok "mount with allow_other,default_permissions"; daemon_log_tail; finish; exit
fi
ok "mount with allow_other,default_permissions"

# ---------------------------------------------------------------- syscall-level checks
mkdir "$MNT/ops"
run_ops 240 all "$MNT/ops"
alive "the syscall checks"

# open(2) racing unlink(2) on a few names, 32 processes for 5 s: an open either
# fails with ENOENT or gives a descriptor that works (issue 15: opens counted
# on an inode being freed gave EIO/ESTALE later, and a failed release).
mkdir "$MNT/openrace"
run_ops 60 -t 5 openrace "$MNT/openrace" 32
alive "the open/unlink race"

# ---------------------------------------------------------------- permissions (default_permissions)
P=$MNT/perm
mkdir -p "$P/closed" "$P/open" "$P/private" "$P/sticky"
chmod 0755 "$P" "$P/closed"; chmod 0777 "$P/open"; chmod 0700 "$P/private"; chmod 1777 "$P/sticky"
echo secret >"$P/secret"; chmod 0600 "$P/secret"
echo public >"$P/public"; chmod 0644 "$P/public"
echo inner >"$P/private/inner"; chmod 0644 "$P/private/inner"
echo mine >"$P/sticky/roots"; chmod 0666 "$P/sticky/roots"

as_nobody() { timeout 20 "${NOBODY[@]}" "$@" 2>"$SCRATCH/nobody.err"; }
denied() {  # DESCRIPTION ERRTEXT CMD... — the command fails with that error text
  local d=$1 want=$2; shift 2
  if as_nobody "$@" >/dev/null; then not_ok "$d (it succeeded)"
  elif grep -q "$want" "$SCRATCH/nobody.err"; then ok "$d"
  else not_ok "$d (got: $(head -c 200 "$SCRATCH/nobody.err"))"; fi
}
check_eq "nobody reads a 0644 root file (allow_other works)" public "$(as_nobody cat "$P/public")"
check "nobody lists a 0755 directory" as_nobody ls "$P/closed"
check "nobody creates a file in a 0777 directory" as_nobody sh -c "echo hi >'$P/open/by-nobody'"
check_eq "a file nobody creates is owned by 65534:65534" "65534:65534" "$(stat -c %u:%g "$P/open/by-nobody" 2>&1)"
denied "nobody cannot create a file in a root-owned 0755 directory (EACCES)" "Permission denied" touch "$P/closed/x"
denied "nobody cannot mkdir in a root-owned 0755 directory (EACCES)" "Permission denied" mkdir "$P/closed/d"
denied "nobody cannot read a 0600 root file (EACCES)" "Permission denied" cat "$P/secret"
denied "nobody cannot write a 0644 root file (EACCES)" "Permission denied" sh -c "echo x >>'$P/public'"
denied "nobody cannot look inside a 0700 directory (EACCES)" "Permission denied" stat "$P/private/inner"
denied "nobody cannot remove root's file from a sticky directory (EPERM)" "Operation not permitted" rm -f "$P/sticky/roots"
denied "nobody cannot chmod root's file (EPERM)" "Operation not permitted" chmod 0777 "$P/public"
denied "nobody cannot chown its own file to root (EPERM)" "Operation not permitted" chown 0 "$P/open/by-nobody"
check_eq "the refused operations changed nothing" "public|644|root-file-kept" \
  "$(cat "$P/public")|$(stat -c %a "$P/public")|$([ -e "$P/sticky/roots" ] && echo root-file-kept)"

alive "the permission checks"

# ---------------------------------------------------------------- POSIX ACLs through system.posix_acl_*
A=$MNT/acl
mkdir "$A"; chmod 0755 "$A"
denied "before the ACL, nobody cannot create in the directory" "Permission denied" touch "$A/before"
check "setfacl -m u:65534:rwx on a directory" setfacl -m u:65534:rwx "$A"
check "getfacl shows user:65534:rwx" grep -qx 'user:65534:rwx' <(getfacl -n --omit-header "$A" 2>&1)
quiet() { "$@" >/dev/null 2>&1; }
check "the ACL is the system.posix_acl_access xattr" quiet getfattr -n system.posix_acl_access "$A"
check "with the ACL, nobody can create in the directory" as_nobody touch "$A/by-acl"
check "setfacl -d -m u:65534:rx (default ACL)" setfacl -d -m u:65534:rx "$A"
touch "$A/inherits"
check "a new file inherits the default ACL entry" grep -q '^user:65534:r-x' <(getfacl -n --omit-header "$A/inherits" 2>&1)
mkdir "$A/subdir"
check "a new directory inherits the default ACL as its default ACL" \
  grep -q '^default:user:65534:r-x' <(getfacl -n --omit-header "$A/subdir" 2>&1)
check "setfacl -x removes the entry" setfacl -x u:65534 "$A"
denied "without the entry, nobody cannot create there again" "Permission denied" touch "$A/after"

alive "the ACL checks"

# ---------------------------------------------------------------- a large (htree) directory
# Every step is bounded; when creating the entries fails, the steps that depend
# on the full set are skipped (their failure would say nothing new).
B=$MNT/bigdir
N=${POSIX_BIGDIR_N:-100000}
BIGDIR_OK=0
mkdir "$B"
t0=$(date +%s.%N)
run_ops 130 -t 120 bigdir create "$B" "$N" && BIGDIR_OK=1
t1=$(date +%s.%N)
if [ "$BIGDIR_OK" = 1 ]; then
  check_eq "ls -f of the large directory lists $N names plus . and .." "$((N + 2))" "$(timeout 60 ls -f "$B" | wc -l)"
  t2=$(date +%s.%N)
  run_ops 70 -t 60 bigdir verify "$B" "$N" 1
  run_ops 40 -t 30 bigdir lookup "$B" "$N" 1 3000
  t3=$(date +%s.%N)
  run_ops 130 -t 120 bigdir remove "$B" "$N" 1 2 || BIGDIR_OK=0
  t4=$(date +%s.%N)
  run_ops 70 -t 60 bigdir verify "$B" "$N" 2
  run_ops 40 -t 30 bigdir lookup "$B" "$N" 2 3000
  secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
  diag "htree: create $N in $(secs "$t0" "$t1") s, ls -f $(secs "$t1" "$t2") s, verify + 3000 lookups $(secs "$t2" "$t3") s," \
    "remove $((N / 2)) $(secs "$t3" "$t4") s"
else
  diag "htree: creating $N entries failed after $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s; skipping the steps that need them"
fi

# ---------------------------------------------------------------- the manifest, then the oracles
alive "the large-directory checks"
timeout 60 sync
manifest "$MNT" "$SCRATCH/m.mount"
t_umount "$MNT"
if fsck_clean "$IMG" "$SCRATCH/fsck1.out"; then ok "e2fsck -fn is clean after the workload"
else not_ok "e2fsck -fn is clean after the workload"; grep -vE '^(Pass|e2fsck)|could be (shorter|narrower)|Optimize\? no|^$' "$SCRATCH/fsck1.out" | head -n 20 | sed 's/^/#   /'; fi

if k_mount_ro "$IMG" "$KMNT"; then
  ok "the kernel mounts the volume read-only (ro,noload)"
  manifest "$KMNT" "$SCRATCH/m.kernel"
  k2=$(stat -c %b "$KMNT/ops/fallocate/keep2" 2>&1)
  check "kernel view: the 2 MiB preallocated past EOF of ops/fallocate/keep2 is on disk (st_blocks $k2)" \
    test "$k2" -ge 4096 2>/dev/null
  compare_manifests "the kernel sees the same tree as the mount did" "$SCRATCH/m.mount" "$SCRATCH/m.kernel"
  if [ "$BIGDIR_OK" = 1 ]; then
    run_ops 70 -t 60 bigdir verify "$KMNT/bigdir" "$N" 2
    run_ops 40 -t 30 bigdir lookup "$KMNT/bigdir" "$N" 2 2000
  fi
  k_umount "$KMNT"
else
  not_ok "the kernel mounts the volume read-only (ro,noload)"
fi

# ---------------------------------------------------------------- remount: read-only, then read-write
if t_mount "$IMG" "$MNT" ro; then
  ok "remount read-only"
  manifest "$MNT" "$SCRATCH/m.ro"
  compare_manifests "a read-only remount shows the same tree" "$SCRATCH/m.mount" "$SCRATCH/m.ro"
  denied_ro() { if touch "$MNT/ro-test" 2>"$SCRATCH/ro.err"; then not_ok "$1 (it succeeded)"
    elif grep -q 'Read-only file system' "$SCRATCH/ro.err"; then ok "$1"; else not_ok "$1 ($(cat "$SCRATCH/ro.err"))"; fi; }
  denied_ro "creating a file on a read-only mount is EROFS"
  t_umount "$MNT"
else
  not_ok "remount read-only"; daemon_log_tail
fi
if t_mount "$IMG" "$MNT"; then
  ok "remount read-write"
  if [ "$BIGDIR_OK" = 1 ]; then
    run_ops 130 -t 120 bigdir remove "$B" "$N" 2 0
    run_ops 70 -t 60 bigdir verify "$B" "$N" 0
    check "rmdir of the emptied large directory" rmdir "$B"
  fi
  t_umount "$MNT"
  if fsck_clean "$IMG" "$SCRATCH/fsck2.out"; then ok "e2fsck -fn is clean after emptying the large directory"
  else not_ok "e2fsck -fn is clean after emptying the large directory"; grep -vE '^(Pass|e2fsck)|could be (shorter|narrower)|Optimize\? no|^$' "$SCRATCH/fsck2.out" | head -n 20 | sed 's/^/#   /'; fi
else
  not_ok "remount read-write"; daemon_log_tail
fi
# The daemon's log: no release failed (an open counted on a freed inode), and
# libext2fs printed no bitmap warning (its fallocate path, issue 15).
if [ "$TARGET" = csvfs ]; then
  check_eq "the daemon logged no failed release" "" "$(grep -m1 'release failed' "$CSVFS_LOG")"
  check_eq "libext2fs printed no bitmap warning into the daemon's log" "" \
    "$(grep -m1 -E 'Illegal (block|inode) number passed to ext2fs' "$CSVFS_LOG")"
fi
# A sanitizer build of the daemon must have reported nothing.
if [ "$TARGET" = csvfs ] && ldd "$BIN/csvfs" 2>/dev/null | grep -q libasan; then
  san=$(grep -m1 -E 'AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:' "$CSVFS_LOG")
  check_eq "no sanitizer report in the daemon's log" "" "$san"
fi
[ "$TEST_FAILS" -gt 0 ] && daemon_log_tail
diag "posix.sh on $TARGET: $(( $(date +%s) - START )) s"
finish
