#!/usr/bin/env bash
# make demo: a 3-node lab cluster on this machine (csvfs-lab: a network
# namespace and a real corosync per node), the shared LUN mounted at
# /ClusterStorage/Volume1 on every node; a qcow2 VM disk is created on node1,
# written on node2 (qemu-io -t none, as QEMU's cache=none does), read and
# verified on node3 as after a live migration; while it runs on node3, node1
# is refused the disk (QEMU's own lock error); node2 redirects its I/O through
# the coordinator on request; the coordinator role moves while node2 writes;
# node3 takes a cluster-wide snapshot; then csvctl status. The lab
# stays up for you: 'build/bin/csvfs-lab exec 2' gives a shell on node2,
# 'build/bin/csvfs-lab down' removes it.
set -euo pipefail
BUILD=${BUILD:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
bin="$top/$BUILD/bin"
lab="$bin/csvfs-lab"
V=/ClusterStorage/Volume1
export CSVFS_LAB=${CSVFS_LAB:-default}

[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (namespaces, FUSE)" >&2; exit 1; }
if "$lab" status >/dev/null 2>&1; then
  echo "== a previous demo lab is up: csvfs-lab down"
  "$lab" down
fi
on() { local k=$1; shift; echo "-- node$k\$ $*"; timeout 120 "$lab" exec "$k" -- "$@"; }

echo "== csvfs-lab up -n 3 --size 8G   (3 nodes, corosync in each, one shared LUN)"
"$lab" up -n 3 --size 8G
echo
echo "== node1 creates a qcow2 VM disk"
on 1 qemu-img create -q -f qcow2 "$V/vm1.qcow2" 16G
echo "== node2 runs the VM: writes 0xab @0 (4M) and 0xcd @5G (1M), O_DIRECT"
on 2 qemu-io -t none -f qcow2 -c 'write -P 0xab 0 4M' -c 'write -P 0xcd 5G 1M' "$V/vm1.qcow2" | grep -v '^ops'
echo "== the VM moves to node3 (no disk handoff): read back and verify"
on 3 qemu-io -t none -f qcow2 -c 'read -P 0xab 0 4M' -c 'read -P 0xcd 5G 1M' -c 'read -P 0 8M 1M' "$V/vm1.qcow2" | grep -v '^ops'
on 3 qemu-img check "$V/vm1.qcow2"
echo
echo "== file locks hold across nodes: while the VM runs on node3, node1 cannot open its disk read-write"
"$lab" exec 3 -- sh -c "echo 'read 0 4k'; sleep 3" </dev/null | "$lab" exec 3 -- qemu-io -t none -f qcow2 "$V/vm1.qcow2" >/dev/null 2>&1 &
vm=$!
sleep 1
on 1 qemu-io -t none -f qcow2 -c 'read 0 4k' "$V/vm1.qcow2" 2>&1 | grep -m2 -E '^-- |lock|bytes' || true
wait "$vm" || true
echo "== the VM stopped on node3: node1 starts it"
on 1 qemu-io -t none -f qcow2 -c 'read -P 0xab 0 4k' "$V/vm1.qcow2" | grep -v '^ops'
echo
echo "== redirected I/O on request: node2's data goes through the coordinator (a lease of 1 min)"
on 2 "$bin/csvctl" redirect on --for 1m
on 2 qemu-io -t none -f qcow2 -c 'write -P 0x5a 8M 1M' "$V/vm1.qcow2" | grep -v '^ops'
on 2 "$bin/csvctl" status | grep -E '^  node2 '
on 2 "$bin/csvctl" redirect off
on 3 qemu-io -t none -f qcow2 -c 'read -P 0x5a 8M 1M' "$V/vm1.qcow2" | grep -v '^ops'
echo
echo "== the coordinator role moves while node2's VM writes 256M: the VM sees no error"
"$lab" exec 2 -- qemu-io -t none -f qcow2 -c 'write -P 0x77 16M 256M' "$V/vm1.qcow2" >/dev/null &
vm=$!
sleep 0.2
on 1 "$bin/csvctl" move
if wait "$vm"; then echo "-- node2: the VM's write completed"; else echo "-- node2: the VM's write FAILED"; fi
on 3 qemu-io -t none -f qcow2 -c 'read -P 0x77 16M 256M' "$V/vm1.qcow2" | grep -v '^ops'
on 3 "$bin/csvctl" status | grep -m1 -i coordinator
echo
echo "== a cluster-wide snapshot from node3: freeze every node, copy the LUN, thaw;"
echo "   the copy gets a GUID of its own (--new-guid), so it mounts beside the volume"
snap=demo-$(date +%Y%m%d-%H%M%S)
on 3 "$bin/csvctl" snapshot --hook "$top/tools/hooks/copy.sh" --name "$snap" --new-guid
lun=$("$lab" env 1 | sed -n 's/^CSVFS_LAB_LUN=//p')
echo "-- e2fsck -fn $(dirname "$lun")/$snap.img   (a clean ext4, no journal replay needed)"
e2fsck -fn "$(dirname "$lun")/$snap.img" 2>&1 | tail -1
echo
echo "== the same volume on every node"
for k in 1 2 3; do on "$k" ls -la "$V"; done
echo
echo "== csvctl status (asked on node2)"
on 2 "$bin/csvctl" status
echo
echo "The lab stays up: '$lab exec 2' opens a shell on node2;"
echo "'$lab exec 1 -- $bin/csvctl move node3' moves the coordinator role to node3;"
echo "'$lab down' removes everything the demo created but the snapshot image"
echo "next to the LUN ($(dirname "$lun")/$snap.img): remove it when you are done."
