#!/bin/sh
# csvfs snapshot hook: a reflink copy of an image-file LUN (docs/snapshot.md).
# Runs on the coordinator while every node is frozen. The copy goes next to
# the LUN as <snapshot name>.img, or into CSVFS_SNAPSHOT_DIR when the daemon's
# environment sets it. Needs a filesystem with reflinks (XFS reflink=1, btrfs):
# --reflink=always fails rather than falling back to a slow full copy.
set -eu
: "${CSVFS_LUN:?run by csvfs as a snapshot hook}" "${CSVFS_SNAPSHOT_NAME:?}"
dir=${CSVFS_SNAPSHOT_DIR:-$(dirname "$CSVFS_LUN")}
dest=$dir/$CSVFS_SNAPSHOT_NAME.img
if [ -e "$dest" ]; then
  echo "snapshot hook: $dest already exists; choose another snapshot name" >&2
  exit 1
fi
# copy.sh runs this with COPY_REFLINK=auto (a full copy where reflinks are missing)
cp --reflink="${COPY_REFLINK:-always}" --sparse=auto -- "$CSVFS_LUN" "$dest.part" ||
  { rm -f -- "$dest.part"; exit 1; }
# csvctl snapshot --new-guid: the copy, still private under its .part name, gets
# the GUID csvctl chose (only its superblock changes: metadata_csum_seed).
if [ -n "${CSVFS_NEW_GUID:-}" ]; then
  "${CSVFS_CSVCTL:-csvctl}" guid --fresh-copy --set "$CSVFS_NEW_GUID" "$dest.part" >/dev/null ||
    { rm -f -- "$dest.part"; exit 1; }
fi
mv -- "$dest.part" "$dest"
echo "snapshot of volume $CSVFS_VOLUME_GUID: $dest"
[ -z "${CSVFS_NEW_GUID:-}" ] || echo "CSVFS_SNAPSHOT_GUID=$CSVFS_NEW_GUID"
