#!/usr/bin/env bash
# A directory another node moved, while this node's kernel still holds its old
# dentry (issue 15, docs/testing.md "Known failures"; design.md §5): a 3-node
# csvfs-lab, real corosync, real mounts. Node A keeps a file open in p/x (an
# open file pins the directory's dentry: it outlives any invalidation), node B
# renames p/x to q/y, then A renames q/y to z itself — a lookup under the
# kernel's rename lock that finds the directory under a new name. The kernel
# cannot move a directory dentry then (d_splice_alias): unless the front end
# tells it the directory under a fresh node id (fs/fuse_alias.c), the rename
# fails with ESTALE, every time (it did at 27151a1, where the soak's
# "ESTALE from a rename under moves" was written down). Four rounds: no role
# change, the role moving after B's rename, B coordinating when it renames,
# A coordinating when B renames. After each: A reads the file through the
# new path, A's view of the old places is right, a rename of the directory
# into itself is EINVAL (the VFS saw one dentry for it, not two), and the
# open file still reads. Then names node A's kernel cached as a participant,
# changed by B after the role moved to A or to B: A must see each change.
# Ends with every node unmounted and e2fsck -fn clean.
. "$(dirname "$0")/../lib.sh"

lab_test_begin stale_dirs staledirs perl
V=/ClusterStorage/Volume1

on() { local k=$1; shift; timeout 60 "$LAB" exec "$k" -- "$@"; }
sh_on() { local k=$1; shift; timeout 60 "$LAB" exec "$k" -- sh -c "$*"; }
coordinator() { on "$1" "$CTL" status --json 2>/dev/null | sed -n 's/.*"coordinator":"\([^"]*\)".*/\1/p' | head -1; }
all_see() { local k; for k in 1 2 3; do [ "$(coordinator "$k")" = "node$1" ] || return 1; done; }
# move_to K — the role to node K (asked on node1), until every node names it
move_to() {
  [ "$(coordinator 1)" = "node$1" ] && return 0
  on 1 "$CTL" move "node$1" >/dev/null 2>&1
  wait_until 30 all_see "$1"
}

"$LAB" up -n 3 --lun "$S/lun.img" --size 512M >"$S/up.out" 2>&1; rc=$?
check_eq "lab up: 3 nodes, the volume mounted everywhere" 0 "$rc"
[ "$rc" -eq 0 ] || { sed 's/^/# /' "$S/up.out"; finish; exit; }
known() { [ -n "$(coordinator 1)" ]; }
wait_until 30 known
A=2; B=3; O=1   # A keeps the file open and renames; B moves the directory first
move_to "$O"
check "node$O coordinates to begin with" all_see "$O"

# holder R FILE — a process on node A keeps FILE open until $S/go$R exists
# (bounded: 60 s), then prints what it reads through its descriptor.
holder() {
  sh_on "$A" "perl -e 'open(F, \"<\", \"$2\") or die \"open: \$!\"; open(M, \">\", \"$S/open$1\"); close(M); my \$n = 0;
      until (-e \"$S/go$1\" || \$n++ > 600) { select(undef, undef, undef, 0.1) }
      sysseek(F, 0, 0); sysread(F, my \$b, 100); print \$b'" >"$S/held$1.out" 2>&1 &
  HELD=$!
}

# round R HOW: B renames p/x to q/y (HOW: where the role is before and after),
# then A renames q/y to z.
round() {
  local r=$1 how=$2 d=$V/r$1 got
  check "round $r: node$A makes p/x/f and q, and looks them up" \
    sh_on "$A" "mkdir -p $d/p/x $d/q && echo data$r >$d/p/x/f && stat $d/p/x/f >/dev/null && ls $d/q >/dev/null"
  holder "$r" "$d/p/x/f"
  check "round $r: node$A holds p/x/f open" wait_until 20 test -e "$S/open$r"
  case $how in
    none) on "$B" mv "$d/p/x" "$d/q/y" ;;
    after) on "$B" mv "$d/p/x" "$d/q/y"; move_to "$B"; move_to "$O" ;;
    renamer) move_to "$B"; on "$B" mv "$d/p/x" "$d/q/y"; move_to "$O" ;;
    holder) move_to "$A"; on "$B" mv "$d/p/x" "$d/q/y"; move_to "$O" ;;
  esac
  check "round $r ($how): every node names node$O as coordinator again" all_see "$O"
  got=$(on "$A" perl -e 'rename($ARGV[0], $ARGV[1]) ? print "renamed" : print "$!"' "$d/q/y" "$d/z" 2>&1)
  check_eq "round $r ($how): node$A renames the directory node$B moved (old dentry pinned)" renamed "$got"
  check_eq "round $r: node$A reads the file through the new path" "data$r" "$(on "$A" cat "$d/z/f" 2>&1)"
  check_eq "round $r: node$A sees p and q empty" "|" "$(sh_on "$A" "echo \$(ls $d/p)'|'\$(ls $d/q)" 2>&1)"
  got=$(on "$A" perl -e 'rename($ARGV[0], $ARGV[1]) ? print "renamed" : print "$!"' "$d/z" "$d/z/in" 2>&1)
  check_eq "round $r: a rename of the directory into itself is EINVAL (one dentry)" "Invalid argument" "$got"
  touch "$S/go$r"
  wait "$HELD"
  check_eq "round $r: the open file still reads through its descriptor" "data$r" "$(cat "$S/held$r.out")"
  check_eq "round $r: node$B sees the directory at z" "data$r" "$(on "$B" cat "$d/z/f" 2>&1)"
}
round 1 none
round 2 after
round 3 renamer
round 4 holder

# Names node A's kernel caches as a participant (under the directory's
# attribute lock, docs/cluster.md "Attribute caching") across a move: the role
# goes to A itself or to B, then B changes the directory. The new coordinator
# knows nothing of what A's kernel holds; its change must still recall A's lock
# (A's recall count grows) and A's next look must see it.
recalls() { on "$1" "$CTL" status --json 2>/dev/null | sed -n 's/.*"attr_locks":{[^}]*"recalls":\([0-9]*\).*/\1/p'; }
n=0
cached_case() {
  local to=$1 what=$2 setup=$3 observe=$4 change=$5 expected=$6 d before after got
  n=$((n + 1)); d=$V/m$n
  move_to "$O"
  sh_on "$B" "mkdir $d && cd $d && $setup" >/dev/null 2>&1
  # the first look asks for the locks, later ones are answered under them
  sh_on "$A" "cd $d && $observe; ls >/dev/null; sleep 1.2; $observe; ls >/dev/null; sleep 0.3; $observe" >/dev/null 2>&1
  before=$(recalls "$A")
  move_to "$to"
  sh_on "$B" "cd $d && $change" >/dev/null 2>&1
  got=$(sh_on "$A" "cd $d && $observe" 2>&1)
  after=$(recalls "$A")
  check_eq "node$A sees $what made on node$B after the role moved to node$to" "$expected" "$got"
  check "... it had the names cached, and dropped them since (recalls $before -> $after)" \
    sh -c "[ -n '$before' ] && [ -n '$after' ] && [ '$after' -gt '$before' ]"
}
for to in "$A" "$B"; do
  cached_case "$to" "a create over a cached absent name" "echo x >f" "stat -c %s n 2>/dev/null || echo none" "echo abc >n" 4
  cached_case "$to" "a directory rename" "mkdir x && echo x >x/f" "stat -c %s x/f 2>/dev/null || echo gone" "mv x y" gone
  cached_case "$to" "a create (readdir)" "echo x >f" "ls | tr '\n' ' '" "touch g" "f g "
done
move_to "$O"

lab_down_checked "$S/lun.img"
finish
