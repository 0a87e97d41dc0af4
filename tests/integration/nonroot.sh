#!/usr/bin/env bash
# Non-root hypervisors (issue 13): a 3-node csvfs-lab mounted with
# -o allow_other (default_permissions is always on). On a participant, through
# the real mount, the kernel enforces POSIX permissions and ACLs for users who
# are not root, as it would for QEMU run by libvirt-qemu: the image's owner
# and a member of its group read and write a qcow2 VM disk; a user granted
# rw by an ACL set on another node may, then may only read once that node
# narrows the ACL mask, then may not once it removes the entry; a user with no
# grant gets EACCES; nobody but the owner may chmod. Without allow_other no
# user but root gets in, not even the owner. /etc/fuse.conf's user_allow_other
# plays no part: root mounts. Test users (csvacc*) are created and removed
# here. qemu-io reading the patterns back on the coordinator and qemu-img
# check are the oracles; e2fsck -fn checks the volume at the end.
. "$(dirname "$0")/../lib.sh"

LAB="$BIN/csvfs-lab"
export CSVFS_LAB=${CSVFS_TEST_LAB:-accnonroot}   # this test's own lab
unset CSVFS_BIN CSVFS_LAB_TOKEN
export CSVFS_LAB_DAEMON_OPTS="allow_other"
V=/ClusterStorage/Volume1
IMG=$V/vms/disk.qcow2

skip() { ok "nonroot skipped: $* # SKIP"; exit 0; }
[ "$(id -u)" -eq 0 ] || skip "needs root"
for c in corosync ip nsenter unshare e2fsck qemu-img qemu-io setfacl setpriv useradd userdel groupadd; do
  command -v "$c" >/dev/null 2>&1 || skip "$c not installed"
done
[ -x "$LAB" ] || { not_ok "$LAB missing (make)"; finish; exit; }

S=$(scratch_dir)
LUN=$S/lun.img
truncate -s 512M "$LUN"
"$LAB" down >/dev/null 2>&1 || true
on_exit "'$LAB' down --save-logs '$S/logs' >/dev/null 2>&1; mkdir -p '$TOP/$BUILD/test-logs/nonroot'; cp -a '$S/logs/.' '$TOP/$BUILD/test-logs/nonroot/' 2>/dev/null"

# ---- test users: unique names, removed at exit ------------------------------------------
TAG=csvacc$$
GRP=${TAG}g; OWNER=${TAG}o; MEMBER=${TAG}m; ACLU=${TAG}a; NOBODY=${TAG}n
remove_users() {
  local u
  for u in "$OWNER" "$MEMBER" "$ACLU" "$NOBODY"; do userdel "$u" 2>/dev/null; done
  groupdel "$GRP" 2>/dev/null
}
on_exit remove_users
groupadd "$GRP" &&
  useradd -M -N -s /usr/sbin/nologin -g "$GRP" "$OWNER" &&
  useradd -M -N -s /usr/sbin/nologin -G "$GRP" "$MEMBER" &&
  useradd -M -N -s /usr/sbin/nologin "$ACLU" &&
  useradd -M -N -s /usr/sbin/nologin "$NOBODY"
check_eq "test users created ($OWNER owns, $MEMBER in group $GRP, $ACLU, $NOBODY)" 0 "$?"

on() { local k=$1; shift; timeout 60 "$LAB" exec "$k" -- "$@"; }
# as NODE USER CMD... — CMD on NODE as USER with USER's groups
as() { local k=$1 u=$2; shift 2; timeout 60 "$LAB" exec "$k" -- setpriv --reuid="$u" --regid="$(id -g "$u")" --init-groups -- "$@"; }
# qio NODE USER ARGS... — qemu-io on the VM disk as USER; output in $S/qio.out
qio() { local k=$1 u=$2; shift 2; as "$k" "$u" qemu-io -f qcow2 "$@" "$IMG" >"$S/qio.out" 2>&1; }
may_write() { qio "$1" "$2" -c "write -P $3 $4 1M" && ! grep -qi 'error\|denied' "$S/qio.out"; }
may_read() { qio "$1" "$2" -r -c "read 0 64k" && ! grep -qi 'error\|denied' "$S/qio.out"; }
denied() { ! "$@" && grep -q 'Permission denied' "$S/qio.out"; }

"$LAB" up -n 3 --lun "$LUN" >"$S/up.out" 2>&1; rc=$?
check_eq "lab up with -o allow_other on every node" 0 "$rc"
[ "$rc" -eq 0 ] || { sed 's/^/# /' "$S/up.out"; finish; exit; }
check "the kernel got default_permissions and allow_other on every node" \
  sh -c "for k in 1 2 3; do \"$LAB\" exec \$k -- awk '\$2 == \"$V\" && \$3 == \"fuse.csvfs\" && \$4 ~ /default_permissions/ && \$4 ~ /allow_other/ {f = 1} END {exit !f}' /proc/self/mounts || exit 1; done"
if grep -qE '^[[:space:]]*user_allow_other' /etc/fuse.conf 2>/dev/null; then
  diag "/etc/fuse.conf has user_allow_other here: this run does not show it is unneeded"
else
  ok "allow_other works with no user_allow_other in /etc/fuse.conf (root mounts)"
fi
check "a coordinator is known" wait_until 30 sh -c "\"$LAB\" exec 1 -- \"$BIN/csvctl\" status --json 2>/dev/null | grep -q '\"coordinator\":\"node'"
C=$(on 1 "$BIN/csvctl" status --json | sed -n 's/.*"coordinator":"node\([0-9]\)".*/\1/p')
P=$(( C % 3 + 1 ))                       # the participant the users work on
Q=$(( P % 3 + 1 )); [ "$Q" = "$C" ] && Q=$(( Q % 3 + 1 ))   # the other participant
diag "coordinator node$C; users on participant node$P; ACLs set on node$Q"

check "root creates a qcow2 VM disk owned by $OWNER:$GRP, mode 0660, on node$C" \
  on "$C" sh -c "mkdir -m 0755 $V/vms && qemu-img create -q -f qcow2 $IMG 64M &&
                 chown $OWNER:$GRP $IMG && chmod 0660 $IMG"

# ---- owner and group ---------------------------------------------------------------------
check "the owner writes the VM disk on participant node$P" may_write "$P" "$OWNER" 0x11 0
check "a member of its group writes it on node$P" may_write "$P" "$MEMBER" 0x22 1M
check "a user with no grant may not read it (EACCES)" denied may_read "$P" "$NOBODY"
check "nor write it (EACCES)" denied may_write "$P" "$NOBODY" 0x44 3M
check "the ACL user, before any ACL, may not read it (EACCES)" denied may_read "$P" "$ACLU"
out=$(as "$P" "$MEMBER" chmod 0666 "$IMG" 2>&1); rc=$?
check "the group member may not chmod it (EPERM: not the owner)" \
  test "$rc" -ne 0 -a -n "$(grep 'Operation not permitted' <<<"$out")"

# ---- a POSIX ACL set on another node -----------------------------------------------------
check "root grants $ACLU rw with setfacl on node$Q" on "$Q" setfacl -m "u:$ACLU:rw" "$IMG"
check "node$P shows the ACL (getfacl)" sh -c "\"$LAB\" exec $P -- getfacl -p '$IMG' 2>/dev/null | grep -q '^user:$ACLU:rw-'"
check "the ACL user writes the VM disk on node$P" may_write "$P" "$ACLU" 0x33 2M
check "the user with no grant is still refused (EACCES)" denied may_write "$P" "$NOBODY" 0x44 3M
check "node$Q narrows the ACL mask to r" on "$Q" setfacl -m m::r "$IMG"
check "the ACL user may now only read on node$P" may_read "$P" "$ACLU"
check "and its write is refused (EACCES)" denied may_write "$P" "$ACLU" 0x55 3M
check "node$Q removes the ACL user's entry" on "$Q" setfacl -x "u:$ACLU" "$IMG"
check "the ACL user may not read any more on node$P (EACCES)" denied may_read "$P" "$ACLU"

# ---- the oracle: what the users wrote, read by root on the coordinator -------------------
for pat in "0x11 0" "0x22 1M" "0x33 2M"; do
  set -- $pat
  check "qemu-io as root on node$C reads back pattern $1 at $2, written by a user on node$P" \
    on "$C" qemu-io -r -f qcow2 -c "read -P $1 $2 1M" "$IMG"
done
check "and zeros where every write was refused" on "$C" qemu-io -r -f qcow2 -c "read -P 0 3M 1M" "$IMG"
check "qemu-img check: the VM disk is consistent" on "$C" qemu-img check -q "$IMG"

# ---- without allow_other only root gets in ------------------------------------------------
"$LAB" kill "$P" csvfs >/dev/null
check "node$P restarts without allow_other" env CSVFS_LAB_DAEMON_OPTS= "$LAB" start "$P" csvfs
check "the kernel got no allow_other there" \
  "$LAB" exec "$P" -- awk "\$2 == \"$V\" && \$4 !~ /allow_other/ {f = 1} END {exit !f}" /proc/self/mounts
check "there not even the owner may read the disk (EACCES)" denied may_read "$P" "$OWNER"
check "root still may" on "$P" qemu-io -r -f qcow2 -c "read -P 0x11 0 1M" "$IMG"

"$LAB" down --save-logs "$S/logs" >"$S/down.out" 2>&1
check "lab down" test $? -eq 0
check "e2fsck -fn: the volume is clean" fsck_clean "$LUN" "$S/fsck.out"
finish
