#!/bin/sh
# csvfs snapshot hook: an LVM snapshot of a logical-volume LUN (docs/snapshot.md).
# Runs on the coordinator while every node is frozen; CSVFS_LUN is the LV as
# that node sees it (/dev/VG/LV or /dev/mapper/VG-LV). The snapshot LV is named
# after the snapshot; CSVFS_LVM_SNAPSHOT_EXTENTS (default 10%ORIGIN) sizes its
# copy-on-write area. A thin LV needs no size: set CSVFS_LVM_THIN=1.
set -eu
: "${CSVFS_LUN:?run by csvfs as a snapshot hook}" "${CSVFS_SNAPSHOT_NAME:?}"
lv=$(lvs --noheadings -o vg_name,lv_name -- "$CSVFS_LUN" | awk '{print $1 "/" $2}')
[ -n "$lv" ] || { echo "lvm hook: $CSVFS_LUN is not a logical volume" >&2; exit 1; }
if [ "${CSVFS_LVM_THIN:-0}" = 1 ]; then
  lvcreate --quiet -s -n "$CSVFS_SNAPSHOT_NAME" -- "$lv"
else
  lvcreate --quiet -s -l "${CSVFS_LVM_SNAPSHOT_EXTENTS:-10%ORIGIN}" -n "$CSVFS_SNAPSHOT_NAME" -- "$lv"
fi
snap=/dev/${lv%/*}/$CSVFS_SNAPSHOT_NAME
# csvctl snapshot --new-guid: the new LV gets the GUID csvctl chose (a thin
# snapshot is created inactive: activate it for that).
if [ -n "${CSVFS_NEW_GUID:-}" ]; then
  [ -e "$snap" ] || lvchange --quiet -ay -K -- "${lv%/*}/$CSVFS_SNAPSHOT_NAME"
  "${CSVFS_CSVCTL:-csvctl}" guid --fresh-copy --set "$CSVFS_NEW_GUID" "$snap" >/dev/null
fi
echo "snapshot of volume $CSVFS_VOLUME_GUID: $snap"
[ -z "${CSVFS_NEW_GUID:-}" ] || echo "CSVFS_SNAPSHOT_GUID=$CSVFS_NEW_GUID"
