#!/bin/sh
# csvfs snapshot hook: a plain sparse copy of an image-file LUN, for small
# images and for trying snapshots out (make demo): reflink.sh, falling back
# to a full copy where the filesystem has no reflinks. It copies while every
# node is frozen, so the freeze lasts as long as the copy: for real volumes
# use reflink.sh, lvm.sh or the SAN's own snapshot (docs/snapshot.md).
COPY_REFLINK=auto exec "$(dirname "$0")/reflink.sh" "$@"
