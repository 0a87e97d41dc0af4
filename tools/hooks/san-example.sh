#!/bin/sh
# csvfs snapshot hook: the shape of a SAN array's snapshot (docs/snapshot.md).
# An example to adapt, not a working hook: replace the command below with your
# array's CLI or REST call. It runs on the coordinator while every node is
# frozen, and must finish before CSVFS_FREEZE_DEADLINE (seconds since the
# epoch), when csvfs kills it and thaws the volume. Exit 0 only when the array
# confirmed the snapshot; print the snapshot's id for the log.
set -eu
: "${CSVFS_LUN:?run by csvfs as a snapshot hook}" "${CSVFS_SNAPSHOT_NAME:?}"
# The array's own name for the LUN: its WWN, which the kernel shows.
wwn=$(lsblk -ndo WWN -- "$CSVFS_LUN" 2>/dev/null || true)
left=$(( CSVFS_FREEZE_DEADLINE - $(date +%s) ))
echo "would snapshot LUN wwn=${wwn:-unknown} ($CSVFS_LUN) as $CSVFS_SNAPSHOT_NAME within ${left}s" >&2
# For example (HPE 3PAR / Primera):  ssh array createsv -ro "$CSVFS_SNAPSHOT_NAME" "$VVNAME"
# For example (a REST API):          curl -fsS --max-time "$left" -X POST .../snapshots -d ...
# csvctl snapshot --new-guid (CSVFS_NEW_GUID set): present the snapshot LUN to
# this node, then give it the GUID csvctl chose and say so, e.g.
#   "${CSVFS_CSVCTL:-csvctl}" guid --fresh-copy --set "$CSVFS_NEW_GUID" /dev/disk/by-id/wwn-0x...
#   echo "CSVFS_SNAPSHOT_GUID=$CSVFS_NEW_GUID"
# or refuse it (exit 1): csvctl fails a snapshot whose hook did not confirm it.
echo "san-example hook: edit me to call your array; nothing was snapshotted" >&2
exit 1
