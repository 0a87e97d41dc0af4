#!/usr/bin/env bash
# libvirt on a 2-node csvfs-lab (docs/libvirt.md): a private libvirtd per node
# (its own /etc/libvirt, /var/lib/libvirt, /var/log/libvirt, /run, and a
# passwd with libvirt-qemu, all bound inside the node's mount namespace, so
# the host is untouched), a `dir` storage pool on /ClusterStorage/Volume1/vms
# on both nodes, a VM whose qcow2 disk is a volume of that pool, run by QEMU
# as the non-root libvirt-qemu user (allow_other), live-migrated to the other
# node and back. QEMU's image lock moves with the VM (the node without it is
# refused the disk); the migrated QEMU reads the data written before, checked
# by its own qemu-io (pattern verification, which the test also shows failing
# on a wrong pattern); qemu-img check and e2fsck -fn at the end.
#
# Needs libvirt-daemon, libvirt-clients and qemu-system-x86 (not in make deps:
# skipped without them). The VM has no OS: SeaBIOS finds nothing to boot and
# waits, which is all a live migration needs.
. "$(dirname "$0")/../lib.sh"

LAB="$BIN/csvfs-lab"
export CSVFS_LAB=${CSVFS_TEST_LAB:-acclibvirt}   # this test's own lab
unset CSVFS_BIN CSVFS_LAB_TOKEN
export CSVFS_LAB_DAEMON_OPTS="allow_other"
V=/ClusterStorage/Volume1
IMG=$V/vms/vm1.qcow2

skip() { ok "libvirt skipped: $* # SKIP"; exit 0; }
[ "$(id -u)" -eq 0 ] || skip "needs root"
for c in corosync ip nsenter unshare e2fsck libvirtd virsh qemu-system-x86_64 qemu-img qemu-io; do
  command -v "$c" >/dev/null 2>&1 || skip "$c not installed (apt-get install libvirt-daemon libvirt-clients qemu-system-x86)"
done
[ -x "$LAB" ] || { not_ok "$LAB missing (make)"; finish; exit; }

S=$(scratch_dir)
LUN=$S/lun.img
truncate -s 1G "$LUN"
"$LAB" down >/dev/null 2>&1 || true
LIBVIRTD_PIDS=()
stop_libvirt() {
  local p i
  for k in 1 2; do timeout 20 "$LAB" exec "$k" -- virsh destroy vm1 >/dev/null 2>&1; done
  for p in "${LIBVIRTD_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${LIBVIRTD_PIDS[@]}"; do
    for ((i = 0; i < 50; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null
  done
  LIBVIRTD_PIDS=()
}
on_exit "'$LAB' down --save-logs '$S/logs' >/dev/null 2>&1; mkdir -p '$TOP/$BUILD/test-logs/libvirt'; cp -a '$S/logs/.' '$TOP/$BUILD/test-logs/libvirt/' 2>/dev/null"
on_exit stop_libvirt

on() { local k=$1; shift; timeout 120 "$LAB" exec "$k" -- "$@"; }
qemu_log() { echo "$S/n$1/log/qemu/vm1.log"; }

"$LAB" up -n 2 --lun "$LUN" >"$S/up.out" 2>&1; rc=$?
check_eq "lab up: 2 nodes with allow_other" 0 "$rc"
[ "$rc" -eq 0 ] || { sed 's/^/# /' "$S/up.out"; finish; exit; }

# ---- a private libvirtd on each node ---------------------------------------------------
cp /etc/passwd "$S/passwd"; cp /etc/group "$S/group"
grep -q '^libvirt-qemu:' "$S/passwd" ||
  echo 'libvirt-qemu:x:64055:64055:Libvirt Qemu:/var/lib/libvirt:/usr/sbin/nologin' >>"$S/passwd"
grep -q '^libvirt-qemu:' "$S/group" || echo 'libvirt-qemu:x:64055:' >>"$S/group"
QUID=$(awk -F: '$1 == "libvirt-qemu" {print $3}' "$S/passwd")
QGID=$(awk -F: '$1 == "libvirt-qemu" {print $4}' "$S/passwd")
for k in 1 2; do
  d=$S/n$k
  mkdir -p "$d/etc" "$d/lib" "$d/log" "$d/cache"
  printf 'listen_tls = 0\nlisten_tcp = 1\nauth_tcp = "none"\n' >"$d/etc/libvirtd.conf"
  # QEMU runs as libvirt-qemu, as on Debian; no cgroups, no MAC driver and no
  # virtlogd in a lab node. The image's owner is set once, by hand (relabel='no').
  printf '%s\n' 'user = "libvirt-qemu"' 'group = "libvirt-qemu"' 'security_driver = "none"' \
    'stdio_handler = "file"' 'cgroup_controllers = [ ]' >"$d/etc/qemu.conf"
  "$LAB" exec "$k" -- sh -ec '
    mount --bind "$1/etc" /etc/libvirt; mkdir -p /var/lib/libvirt /var/log/libvirt /var/cache/libvirt
    mount --bind "$1/lib" /var/lib/libvirt; mount --bind "$1/log" /var/log/libvirt
    mount --bind "$1/cache" /var/cache/libvirt
    mount --bind "$2/passwd" /etc/passwd; mount --bind "$2/group" /etc/group
    exec libvirtd -l -f /etc/libvirt/libvirtd.conf' sh "$d" "$S" >"$d/libvirtd.out" 2>&1 &
  LIBVIRTD_PIDS+=($!)
done
check "libvirtd answers on both nodes" wait_until 30 sh -c \
  "\"$LAB\" exec 1 -- virsh -q version >/dev/null && \"$LAB\" exec 2 -- virsh -q version >/dev/null"

# ---- a dir pool on the mount, on every node --------------------------------------------
on 1 mkdir -p "$V/vms"
for k in 1 2; do
  check "node$k: virsh pool-define-as csv dir --target $V/vms; pool-start" \
    sh -c "\"$LAB\" exec $k -- virsh pool-define-as csv dir --target $V/vms >/dev/null && \"$LAB\" exec $k -- virsh pool-start csv >/dev/null"
done
check "node1: virsh vol-create-as csv vm1.qcow2 256M --format qcow2" \
  on 1 virsh vol-create-as csv vm1.qcow2 256M --format qcow2
check "node2 sees the volume after pool-refresh, 256 MiB qcow2" \
  sh -c "\"$LAB\" exec 2 -- virsh pool-refresh csv >/dev/null && \"$LAB\" exec 2 -- virsh vol-dumpxml --pool csv vm1.qcow2 | grep -q \"<capacity unit='bytes'>268435456</capacity>\""
check "node2: virsh pool-info csv says running" \
  sh -c "\"$LAB\" exec 2 -- virsh pool-info csv | grep -q '^State: *running'"
check "a pattern written into the disk before the VM starts (qemu-io, node1)" \
  on 1 qemu-io -f qcow2 -c "write -P 0x5a 0 1M" "$IMG"
check "the disk belongs to libvirt-qemu, mode 0660" on 1 sh -c "chown $QUID:$QGID $IMG && chmod 0660 $IMG"

cat >"$S/vm1.xml" <<'EOF'
<domain type='qemu'>
  <name>vm1</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <devices>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='qcow2' cache='none' io='native'/>
      <source pool='csv' volume='vm1.qcow2'>
        <seclabel model='dac' relabel='no'/>
      </source>
      <target dev='vda' bus='virtio'/>
    </disk>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
check "node1: virsh define + start vm1 (disk on the pool, cache=none)" \
  sh -c "\"$LAB\" exec 1 -- virsh define '$S/vm1.xml' >/dev/null && \"$LAB\" exec 1 -- virsh start vm1 >/dev/null"
check "QEMU runs as libvirt-qemu (uid $QUID), not root" \
  sh -c "ps -o uid= -C qemu-system-x86_64 | grep -qw $QUID"
# write_lock_refused K — qemu-io on node K cannot take the image's write lock
write_lock_refused() { on "$1" qemu-io -f qcow2 -c "read 0 4k" "$IMG" 2>&1 | grep -q 'Failed to get "write" lock'; }
check "node2 may not open the running VM's disk for writing (QEMU's lock, cluster-wide)" write_lock_refused 2

# ---- live migration ----------------------------------------------------------------------
out=$(on 1 virsh migrate --live vm1 qemu+tcp://node2/system 2>&1); rc=$?
if [ "$rc" -ne 0 ]; then
  diag "without --unsafe this libvirt refuses: ${out//$'\n'/ } (docs/libvirt.md: it does not count fuse.csvfs as shared)"
else
  diag "this libvirt migrated without --unsafe (it counts this mount as shared)"
fi
if [ "$rc" -ne 0 ]; then
  check "node1 -> node2: virsh migrate --live --unsafe" on 1 virsh migrate --live --unsafe vm1 qemu+tcp://node2/system
fi
check "vm1 runs on node2" sh -c "\"$LAB\" exec 2 -- virsh domstate vm1 | grep -q running"
check "and no longer on node1" sh -c "! \"$LAB\" exec 1 -- virsh domstate vm1 2>/dev/null | grep -q running"
check "node1 may not open the disk for writing now: the lock moved with the VM" write_lock_refused 1
on 2 virsh qemu-monitor-command vm1 --hmp 'qemu-io libvirt-1-format "read -P 0x5a 0 1M"' >/dev/null
check "the migrated QEMU on node2 reads the pattern written before (its qemu-io verifies it)" \
  sh -c "grep -q 'read 1048576/1048576 bytes at offset 0' '$(qemu_log 2)' && ! grep -q 'Pattern verification failed' '$(qemu_log 2)'"
on 2 virsh qemu-monitor-command vm1 --hmp 'qemu-io libvirt-1-format "read -P 0x77 0 1M"' >/dev/null
check "(and that check fails on a wrong pattern)" wait_until 5 grep -q 'Pattern verification failed' "$(qemu_log 2)"
check "node2 -> node1: virsh migrate --live --unsafe" on 2 virsh migrate --live --unsafe vm1 qemu+tcp://node1/system
check "vm1 runs on node1 again" sh -c "\"$LAB\" exec 1 -- virsh domstate vm1 | grep -q running"
check_eq "the disk still belongs to libvirt-qemu (relabel='no': nobody chowned it back)" \
  "$QUID" "$(on 1 stat -c %u "$IMG")"

on 1 virsh destroy vm1 >/dev/null
check "qemu-img check: the VM disk is consistent" on 1 qemu-img check -q "$IMG"
stop_libvirt
"$LAB" down --save-logs "$S/logs" >"$S/down.out" 2>&1
check "lab down" test $? -eq 0
check "e2fsck -fn: the volume is clean" fsck_clean "$LUN" "$S/fsck.out"
finish
