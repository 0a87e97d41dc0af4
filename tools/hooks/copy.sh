#!/bin/sh
# csvfs snapshot hook: a plain sparse copy of an image-file LUN, for small
# images and for trying snapshots out (make demo). It copies while every
# node is frozen, so the freeze lasts as long as the copy: for real volumes
# use reflink.sh, lvm.sh or the SAN's own snapshot (docs/snapshot.md).
set -eu
: "${CSVFS_LUN:?run by csvfs as a snapshot hook}" "${CSVFS_SNAPSHOT_NAME:?}"
dir=${CSVFS_SNAPSHOT_DIR:-$(dirname "$CSVFS_LUN")}
dest=$dir/$CSVFS_SNAPSHOT_NAME.img
if [ -e "$dest" ]; then
  echo "copy hook: $dest already exists; choose another snapshot name" >&2
  exit 1
fi
cp --reflink=auto --sparse=always -- "$CSVFS_LUN" "$dest.part"
mv -- "$dest.part" "$dest"
echo "snapshot of volume $CSVFS_VOLUME_GUID: $dest"
