#!/usr/bin/env bash
# Exactly once (docs/cluster.md "Exactly once", issue 9) on a 3-node
# csvfs-lab: the coordinator's daemon kills itself (-9) right after the
# journal commit of a participant's create (open O_CREAT|O_EXCL), mkdir,
# rename or unlink, before the reply leaves (the test-only hook
# CSVFS_TEST_KILL_AFTER_COMMIT, fs/server.c). The participant's request is
# sent again to the new coordinator, which answers it from the reply table:
# the application sees success, once (never EEXIST / ENOENT for what did
# happen), and a created file's open works (it writes through it). Then the
# same for a setxattr with XATTR_CREATE (not EEXIST), a removexattr (not
# ENODATA), an open with O_TRUNC and a punch (fallocate -p): for these two
# the participant's resend is held (test-only hook CSVFS_TEST_HOLD_RESEND,
# fs/ops_remote.c) while the third node writes into the file, and that
# write must survive: truncating or punching again would destroy it.
# Oracles: the hook's trigger file consumed and the coordinator changed (the
# kill happened where it should), the log line of the answer from the table,
# stat, xattrs (getfattr) and bytes on every node, then with the lab down
# e2fsck -fn clean and the kernel's read-only view of the tree, bytes and
# xattrs equal to what the nodes saw.
. "$(dirname "$0")/../lib.sh"

lab_test_begin once once perl python3 getfattr fallocate md5sum
# setxattr's XATTR_CREATE needs python; the system's, if there is one (a
# version manager's shim on PATH costs a second a call)
PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3
V=/ClusterStorage/Volume1
ARM=$S/armed
HOLD=$S/hold
# Test only: every daemon of this lab kills itself after the commit of a
# forwarded change of these ops, once, if it is the one that removes $ARM.
export CSVFS_TEST_KILL_AFTER_COMMIT="create_open,create,rename,unlink,setxattr,removexattr,open,fallocate:$ARM"
# Test only: a participant's change whose answer was lost waits for its
# resend while $HOLD exists (rounds with another node's write in between).
export CSVFS_TEST_HOLD_RESEND=$HOLD

on() { local k=$1; shift; timeout 120 "$LAB" exec "$k" -- "$@"; }
coordinator() { on "$1" "$CTL" status --json "$V" 2>/dev/null | sed -n 's/.*"coordinator":"node\([0-9]\)".*/\1/p'; }
nodelog() { echo "/run/csvfs-lab/$CSVFS_LAB/nodes/$1/csvfs.log"; }
answered_from_table() { cat "$(nodelog 1)" "$(nodelog 2)" "$(nodelog 3)" 2>/dev/null | grep -c "answered from the reply table"; }
# on_all TEST PATH — test(1) TEST PATH holds on every node
on_all() { local k; for k in 1 2 3; do on "$k" test "$1" "$V/$2" || return 1; done; }
# on_none PATH — PATH exists on no node
on_none() { local k; for k in 1 2 3; do on "$k" test ! -e "$V/$1" || return 1; done; }

LUN=$S/lun.img
"$LAB" up -n 3 --lun "$LUN" --size 512M >"$S/up.out" 2>&1; rc=$?
check_eq "lab up: 3 nodes" 0 "$rc"
[ "$rc" -eq 0 ] || { sed 's/^/# /' "$S/up.out"; finish; exit; }
check "a coordinator is known" wait_until 30 sh -c "[ -n \"\$('$LAB' exec 1 -- '$CTL' status --json '$V' 2>/dev/null | sed -n 's/.*\"coordinator\":\"node\\([0-9]\\)\".*/\\1/p')\" ]"

# run_on K LANG PROGRAM — a perl (-MFcntl), python3 or sh program on node K
run_on() {
  case $2 in
    perl) on "$1" perl -MFcntl -e "$3" ;;
    python3) on "$1" "$PY" -c "$3" ;;
    sh) on "$1" sh -c "$3" ;;
  esac
}

held_resends() { cat "$(nodelog 1)" "$(nodelog 2)" "$(nodelog 3)" 2>/dev/null | grep -c "test hook: holding the resend"; }
held_more_than() { [ "$(held_resends)" -gt "$1" ]; }

# round NAME SETUP OP [LANG [BETWEEN]] — arms the hook, runs the statement OP
# (perl, or LANG; it prints "ok" when the system call succeeded, else the
# error) on a participant; checks the kill, the answer and the new
# coordinator. BETWEEN: a perl program the third node runs after the kill
# and before the participant's resend (held by CSVFS_TEST_HOLD_RESEND).
round() {
  local name=$1 setup=$2 op=$3 lang=${4:-perl} between=${5:-} c p out before held t0 bg
  c=$(coordinator 1); p=$(( c % 3 + 1 ))
  [ -z "$setup" ] || run_on "$p" "$lang" "$setup" || { not_ok "$name: setup on node$p"; return; }
  before=$(answered_from_table)
  touch "$ARM"
  t0=$(date +%s%3N)
  if [ -n "$between" ]; then
    held=$(held_resends)
    touch "$HOLD"
    run_on "$p" "$lang" "$op" >"$S/out" 2>&1 & bg=$!
    check "$name: node$p's resend waits (test hook)" wait_until 60 held_more_than "$held"
    check "$name: node$(( 6 - c - p )) writes between the change and its resend" on "$(( 6 - c - p ))" perl -MFcntl -e "$between"
    rm -f "$HOLD"
    wait "$bg"
    out=$(cat "$S/out")
  else
    out=$(run_on "$p" "$lang" "$op" 2>&1)
  fi
  diag "$name on node$p (coordinator node$c killed after its commit): '$out' after $(( $(date +%s%3N) - t0 )) ms"
  check_eq "$name on participant node$p succeeds, once, across the kill" ok "$out"
  check "$name: the coordinator node$c's daemon killed itself after the commit (hook consumed)" test ! -e "$ARM"
  check "$name: a new coordinator took over" wait_until 40 sh -c "c=\$('$LAB' exec $p -- '$CTL' status --json '$V' 2>/dev/null | sed -n 's/.*\"coordinator\":\"node\\([0-9]\\)\".*/\\1/p'); [ -n \"\$c\" ] && [ \"\$c\" != $c ]"
  check "$name: the resend was answered from the reply table (log)" test "$(answered_from_table)" -gt "$before"
  rm -f "$ARM"
  "$LAB" start "$c" csvfs >"$S/restart-$name.out" 2>&1
  check "$name: node$c's daemon restarts and sees the volume" wait_until 40 on "$c" test -d "$V/lost+found"
}

round "create (open O_CREAT|O_EXCL, then a write through it)" "" \
  "sysopen(F, '$V/created', O_WRONLY|O_CREAT|O_EXCL, 0644) or die \"\$!\\n\"; syswrite(F, 'through the open') == 16 or die \"write: \$!\\n\"; close(F) or die \"close: \$!\\n\"; print 'ok'"
check "created: on every node" on_all -f created
check_eq "created: the write through its open is there (another node reads it)" "through the open" \
  "$(on "$(( $(coordinator 1) % 3 + 1 ))" cat "$V/created")"

round "mkdir" "" "mkdir('$V/made', 0755) or die \"\$!\\n\"; print 'ok'"
check "made: a directory on every node" on_all -d made

round "rename" "open(F, '>', '$V/old') or die; print F 'moved'; close(F) or die" \
  "rename('$V/old', '$V/made/new') or die \"\$!\\n\"; print 'ok'"
check "renamed: the new name on every node" on_all -f made/new
check "renamed: the old name on no node" on_none old

round "unlink" "open(F, '>', '$V/doomed') or die; close(F) or die" \
  "unlink('$V/doomed') or die \"\$!\\n\"; print 'ok'"
check "unlinked: gone from every node" on_none doomed

# python3 statement STMT, then "ok"; an OSError prints its message instead
py_ok() { printf 'import os\ntry:\n    %s\n    print("ok", end="")\nexcept OSError as e:\n    print(e.strerror, end="")\n' "$1"; }
# xattr_on_all NAME WANT — getfattr of xattr NAME of $V/xa says WANT (its
# value, or its error) on every node
xattr_on_all() {
  local k got
  for k in 1 2 3; do
    got=$(on "$k" getfattr --absolute-names --only-values -n "$1" "$V/xa" 2>&1)
    [ "$got" = "$2" ] || { diag "node$k: getfattr -n $1: '$got'"; return 1; }
  done
}

round "setxattr with XATTR_CREATE" "open('$V/xa', 'w').close()" \
  "$(py_ok "os.setxattr('$V/xa', 'user.once', b'made once', os.XATTR_CREATE)")" python3
check "setxattr: the value on every node" xattr_on_all user.once "made once"

round "removexattr" "import os; os.setxattr('$V/xa', 'user.gone', b'x')" \
  "$(py_ok "os.removexattr('$V/xa', 'user.gone')")" python3
check "removexattr: gone on every node" xattr_on_all user.gone "$V/xa: user.gone: No such attribute"
check "removexattr: the other xattr kept on every node" xattr_on_all user.once "made once"

round "open O_TRUNC (then a write through it)" \
  "open(F, '>', '$V/trunced') or die; print F 'old contents, longer than the new'; close(F) or die" \
  "sysopen(F, '$V/trunced', O_WRONLY|O_TRUNC) or die \"\$!\\n\"; syswrite(F, 'new') == 3 or die \"write: \$!\\n\"; close(F) or die \"close: \$!\\n\"; print 'ok'" \
  perl "sysopen(F, '$V/trunced', O_WRONLY) or die \"\$!\\n\"; syswrite(F, 'written between') == 15 or die; close(F) or die"
# The resend truncating again would leave only "new".
for k in 1 2 3; do
  check_eq "trunced: node$k reads the write between, then the participant's over it" "newtten between" \
    "$(on "$k" cat "$V/trunced")"
done

round "punch (fallocate -p of the first 4 KiB of 8)" \
  "head -c 8192 /dev/zero | tr '\\0' a >'$V/punched'" \
  "fallocate -p -o 0 -l 4096 '$V/punched' && printf ok" sh \
  "sysopen(F, '$V/punched', O_WRONLY) or die \"\$!\\n\"; syswrite(F, 'b' x 1024) == 1024 or die; close(F) or die"
# The resend punching again would leave zeros where the b's are.
PUNCHED=$( { head -c 1024 /dev/zero | tr '\0' b; head -c 3072 /dev/zero; head -c 4096 /dev/zero | tr '\0' a; } | md5sum)
for k in 1 2 3; do
  check_eq "punched: node$k reads the write between, the rest of the hole, the rest kept" "$PUNCHED" \
    "$(on "$k" sh -c "md5sum <'$V/punched'")"
done

# ---- the lab down: the independent oracles -----------------------------------------------
view() { (cd "$1" && find . -path ./lost+found -prune -o -printf '%p %y %s %m\n' | sort); }
on 1 sh -c "cd '$V' && find . -path ./lost+found -prune -o -printf '%p %y %s %m\n' | sort" >"$S/view.nodes"
"$LAB" down --save-logs "$S/logs" >"$S/down.out" 2>&1
check "lab down unmounts every node" test $? -eq 0
fsck_clean "$LUN" "$S/fsck.out"; rc=$?
check_eq "e2fsck -fn is clean (the reply table in inode 5 included)" 0 "$rc"
[ "$rc" -eq 0 ] || sed 's/^/# /' "$S/fsck.out" | head -30
km=$S/kmnt; mkdir -p "$km"
if mount -o ro,loop,noload "$LUN" "$km" 2>"$S/kmount.err"; then
  on_exit "umount '$km' 2>/dev/null"
  view "$km" >"$S/view.kernel"
  check "the kernel's read-only view of the tree equals the nodes' view" cmp -s "$S/view.nodes" "$S/view.kernel"
  diff "$S/view.nodes" "$S/view.kernel" | sed 's/^/# /' | head -20
  check_eq "... with the created file's bytes" "through the open" "$(cat "$km/created")"
  check_eq "... with the truncated file's bytes" "newtten between" "$(cat "$km/trunced")"
  check_eq "... with the punched file's bytes" "$PUNCHED" "$(md5sum <"$km/punched")"
  check_eq "... with the xattr set once" "made once" "$(getfattr --absolute-names --only-values -n user.once "$km/xa" 2>&1)"
  check_eq "... and the removed one gone" "$km/xa: user.gone: No such attribute" \
    "$(getfattr --absolute-names --only-values -n user.gone "$km/xa" 2>&1)"
  umount "$km"
else
  not_ok "kernel read-only mount of the LUN: $(cat "$S/kmount.err")"
fi
finish
