# Helpers of the redirected-I/O lab tests (tests/integration/redirect.sh,
# coordpath.sh): sourced after tests/lib.sh, with LAB (csvfs-lab) and V (the
# volume's mount point in every node) set.

on() { local k=$1; shift; timeout 120 "$LAB" exec "$k" -- "$@"; }
sh_on() { local k=$1; shift; timeout 120 "$LAB" exec "$k" -- sh -c "$*"; }
md5_on() { sh_on "$1" "md5sum < $V/$2" | cut -d' ' -f1; }
status_json() { on "$1" "$BIN/csvctl" status --json 2>/dev/null; }
# coord_of NODE — the coordinator's name as NODE's status gives it ("" none)
coord_of() { status_json "$1" | sed -n 's/.*"coordinator":"\([^"]*\)".*/\1/p'; }
# my_io NODE — "STATE REASONS" of the node as it reports itself
my_io() {
  status_json "$1" | grep -o '"this_node":true,[^}]*' | head -1 |
    sed -n 's/.*"io_state":"\([a-z]*\)","io_reasons":\[\([^]]*\)\].*/\1 \2/p' | tr -d '"'
}
io_is() { [ "$(my_io "$1")" = "$2" ]; }
nodelog() { echo "/run/csvfs-lab/$CSVFS_LAB/nodes/$1/csvfs.log"; }
