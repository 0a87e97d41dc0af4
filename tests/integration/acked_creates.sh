#!/usr/bin/env bash
# Acknowledged creates survive the coordinator's death (design.md §11,
# invariant 7; docs/cluster.md "Durable replies") on a 3-node csvfs-lab.
# A participant creates files as fast as it can (open O_CREAT|O_EXCL +
# close, one after the other) and notes each name once its create returned;
# meanwhile the coordinator's daemon is killed (-9), so it dies with the
# last answered creates' journal commits just done and their blocks not yet
# written home (the home writer, journal/txn.c), and with creates in flight.
# Three rounds, each killing the coordinator of the moment (then restarting
# it). Oracles: the creating program sees no error (a create in flight is
# answered once, by the new coordinator or from its reply table), every name
# it was told had been created is there on every node afterwards, and with
# the lab down e2fsck -fn is clean and the kernel's read-only view holds
# every such name. A coordinator that answered before its commit was durable
# loses the last names of each round.
. "$(dirname "$0")/../lib.sh"
lab_test_begin acked_creates acked perl
V=/ClusterStorage/Volume1
FILES=600
on() { local k=$1; shift; timeout 120 "$LAB" exec "$k" -- "$@"; }
coordinator() { on "$1" "$CTL" status --json "$V" 2>/dev/null | sed -n 's/.*"coordinator":"node\([0-9]\)".*/\1/p'; }
acked() { [ -f "$1" ] && wc -l <"$1" || echo 0; }
# coordinator_other_than C K — node K names a coordinator, and not node C
coordinator_other_than() { local now; now=$(coordinator "$2"); [ -n "$now" ] && [ "$now" != "$1" ]; }
LUN=$S/lun.img
"$LAB" up -n 3 --lun "$LUN" --size 512M >"$S/up.out" 2>&1; rc=$?
check_eq "lab up: 3 nodes" 0 "$rc"
[ "$rc" -eq 0 ] || { sed 's/^/# /' "$S/up.out"; finish; exit; }
known_coordinator() { [ -n "$(coordinator 1)" ]; }
check "a coordinator is known" wait_until 30 known_coordinator

# creator K DIR LOG — on node K, creates DIR/f0.. f(FILES-1), appending each
# name to LOG (a host file) once its create and close returned; stops at the
# first error, which it prints.
creator() {
  on "$1" perl -MFcntl -MIO::Handle -e '
    my ($dir, $log, $n) = @ARGV;
    open(my $l, ">>", $log) or die "$log: $!\n";
    $l->autoflush(1);
    for my $i (0 .. $n - 1) {
      sysopen(my $f, "$dir/f$i", O_CREAT | O_EXCL | O_WRONLY, 0644) or die "create $dir/f$i: $!\n";
      close($f) or die "close $dir/f$i: $!\n";
      print $l "f$i\n";
    }' "$2" "$3" "$FILES"
}

for round in 1 2 3; do
  c=$(coordinator 1)
  [ -n "$c" ] || { not_ok "round $round: no coordinator known"; break; }
  p=1; [ "$p" = "$c" ] && p=2
  dir=$V/r$round log=$S/acked.$round
  check "round $round: node$p makes r$round" on "$p" mkdir "$dir"
  creator "$p" "$dir" "$log" >"$S/creator.$round.out" 2>&1 &
  cpid=$!
  # the kill comes in the middle of the stream of creates
  check "round $round: node$p has created 100 files" wait_until 60 sh -c "[ \$(wc -l <'$log' 2>/dev/null || echo 0) -ge 100 ]"
  before=$(acked "$log")
  "$LAB" kill "$c" csvfs >/dev/null 2>&1
  diag "round $round: coordinator node$c killed after $before acknowledged creates of node$p"
  wait "$cpid"; rc=$?
  check_eq "round $round: node$p's creates all succeed across the kill" "0 $FILES" "$rc $(acked "$log")"
  [ "$rc" -eq 0 ] || sed 's/^/# /' "$S/creator.$round.out"
  check "round $round: another node took over" wait_until 40 coordinator_other_than "$c" "$p"
  "$LAB" start "$c" csvfs >"$S/start.out" 2>&1 || sed 's/^/# /' "$S/start.out"
  check "round $round: node$c's daemon restarts and sees the volume" wait_until 40 on "$c" test -d "$V/lost+found"
  sort "$log" >"$S/want.$round"
  for k in 1 2 3; do
    on "$k" ls "$dir" 2>&1 | sort >"$S/have.$round.$k"
    check "round $round: every acknowledged name of node$p is there on node$k" cmp -s "$S/want.$round" "$S/have.$round.$k"
    diff "$S/want.$round" "$S/have.$round.$k" | sed 's/^/# /' | head -5
  done
done

# ---- the lab down: the independent oracles -----------------------------------------------
lab_down_checked "$LUN"
km=$S/kmnt; mkdir -p "$km"
if mount -o ro,loop,noload "$LUN" "$km" 2>"$S/kmount.err"; then
  on_exit "umount '$km' 2>/dev/null"
  for round in 1 2 3; do
    [ -f "$S/want.$round" ] || continue
    ls "$km/r$round" 2>&1 | sort >"$S/kernel.$round"
    check "round $round: the kernel's read-only view holds every acknowledged name" cmp -s "$S/want.$round" "$S/kernel.$round"
  done
  umount "$km"
else
  not_ok "kernel read-only mount of the LUN: $(cat "$S/kmount.err")"
fi
finish
