#!/usr/bin/env bash
# make install / uninstall, and the installed files used as an admin uses them
# (docs/deploy.md): into a DESTDIR, then inside three csvfs-lab nodes whose
# /usr/local/sbin and /sbin show that DESTDIR (node-private mounts: the host's
# own directories are untouched), so mount(8), mount.fuse3 and the OCF agent
# find the installed programs where an installed system has them.
# Covers: install layout and modes; every word of each tool's --help in its
# installed man page; systemd-analyze verify of csvfs@Volume1.service and of
# the mount unit systemd-fstab-generator makes of the documented fstab line;
# "mount -a -T FSTAB" (UUID=GUID resolved by mount(8) on a loop device, through
# /sbin/mount.fuse.csvfs and mount.fuse3) on three nodes, data written on one
# node read on another, bad options refused with the option named, umount;
# the OCF agent under ocf-tester on a node of the running cluster, its monitor
# depths, a killed daemon caught by monitor; uninstall leaving no file.
# Oracles: e2fsck -fn on the LUN after the last unmount, the kernel's mount
# table, sha256 of the data across nodes, ocf-tester, systemd-analyze.
. "$(dirname "$0")/../lib.sh"

export CSVFS_LAB=${CSVFS_TEST_LAB:-dplinstall}
unset CSVFS_BIN CSVFS_LAB_TOKEN CSVFS_LAB_DAEMON_OPTS
V=/ClusterStorage/Volume1

skip() { ok "install skipped: $* # SKIP"; exit 0; }
[ "$(id -u)" -eq 0 ] || skip "needs root"
for c in corosync ip nsenter unshare losetup e2fsck mount.fuse3 groff; do
  command -v "$c" >/dev/null 2>&1 || skip "$c not installed (make deps)"
done

S=$(scratch_dir)
on_exit "rm -rf '$S'"
D=$S/dest
mkdir -p "$D"
# ocf-tester runs the agent's meta-data as user nobody: the tree must be readable.
chmod 0755 "$S" "$D"

# ---- make install ------------------------------------------------------------------
make_in_top() { make --no-print-directory -C "$TOP" BUILD="$BUILD" DESTDIR="$D" "$@"; }
if ! make_in_top install >"$S/install.log" 2>&1; then
  not_ok "make install DESTDIR=$D"; sed 's/^/# /' "$S/install.log" | tail -20; finish; exit
fi
ok "make install DESTDIR=... (PREFIX /usr/local)"
SB=$D/usr/local/sbin
MAN=$D/usr/local/share/man/man8
UNIT=$D/usr/local/lib/systemd/system/csvfs@.service
AGENT=$D/usr/lib/ocf/resource.d/csvfs/volume
HELPER=$D/sbin/mount.fuse.csvfs
layout_ok() {
  local f
  for f in "$SB/csvfs" "$SB/mkfs.csvfs" "$SB/csvctl" "$SB/csvfs-lab" "$SB/csvfs-lunpath" "$HELPER" "$AGENT"; do
    [ "$(stat -c %a "$f" 2>/dev/null)" = 755 ] || { diag "$f: missing or not mode 755"; return 1; }
  done
  for f in "$UNIT" "$MAN/csvfs.8" "$MAN/mkfs.csvfs.8" "$MAN/csvctl.8" "$MAN/csvfs-lab.8"; do
    [ "$(stat -c %a "$f" 2>/dev/null)" = 644 ] || { diag "$f: missing or not mode 644"; return 1; }
  done
  ! grep -l '@SBINDIR@' "$HELPER" "$UNIT" "$AGENT" | sed 's/^/# not substituted: /' | grep -q .
}
check "installed: programs in sbin, mount helper in /sbin, unit, OCF agent, man pages (modes, paths filled in)" layout_ok
check_eq "the unit and the agent name the installed csvfs" "/usr/local/sbin/csvfs" \
  "$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$UNIT")"

# ---- --help and man pages agree ----------------------------------------------------
# The words a tool's --help names: options (-x, --long), option keys (key=),
# "-o word" options, alternatives (a|b), environment variables, and the
# subcommands of csvctl (csvctl WORD) and csvfs-lab (a command at the start of
# a two-space-indented line).
help_words() {  # help_words TOOL — one word a line
  local tool=$1 text
  text=$("$SB/$tool" --help 2>&1)
  {
    grep -oE '(^|[][ |(,])--?[A-Za-z][A-Za-z0-9-]*' <<<"$text" | sed 's/^[][ |(,]//'
    grep -oE '(^|[^A-Za-z0-9_])[a-z_]+=' <<<"$text" | sed 's/^[^a-z_]//'
    grep -oE -- '-o [a-z_]+' <<<"$text" | sed 's/^-o //'
    grep -oE '[a-z][A-Za-z]*(\|[a-z][A-Za-z]*)+' <<<"$text" | tr '|' '\n'
    grep -oE 'CSVFS_[A-Z_]+' <<<"$text"
    [ "$tool" = csvctl ] && grep -oE 'csvctl [a-z]+' <<<"$text" | sed 's/^csvctl //'
    [ "$tool" = csvfs-lab ] && grep -oE '^  [a-z][a-z-]*' <<<"$text" | sed 's/^  //'
  } | sort -u
}
# The man page as a reader sees it (no hyphenation, one long line a paragraph).
man_text() { groff -man -Tascii -P-cbou -rLL=250n "$MAN/$1.8" 2>/dev/null; }
man_has_help() {  # man_has_help TOOL — names every missing word
  local tool=$1 text w missing=()
  text=$(man_text "$tool")
  [ -n "$text" ] || { diag "$MAN/$tool.8 renders empty"; return 1; }
  [ "$("$SB/$tool" --help >/dev/null 2>&1; echo $?)" = 0 ] || { diag "$tool --help exits non-zero"; return 1; }
  while read -r w; do
    [ -n "$w" ] || continue
    if [[ $w == *= ]]; then
      grep -qE -- "(^|[^A-Za-z0-9_-])$w" <<<"$text" || missing+=("$w")
    else
      grep -qE -- "(^|[^A-Za-z0-9_-])$w([^A-Za-z0-9_-]|\$)" <<<"$text" || missing+=("$w")
    fi
  done < <(help_words "$tool")
  [ ${#missing[@]} -eq 0 ] && return 0
  diag "$tool(8) lacks these words of '$tool --help': ${missing[*]}"
  return 1
}
for t in csvfs mkfs.csvfs csvctl csvfs-lab; do
  check "$t --help: every option and subcommand is in $t(8) ($(help_words "$t" | wc -l) words)" man_has_help "$t"
done

# ---- systemd -----------------------------------------------------------------------
# The fstab line docs/deploy.md gives, with the lab's credential path.
fstab_line() {  # fstab_line GUID [extra options]
  echo "UUID=$1 $V fuse.csvfs cluster,cred=/run/csvfs-cred${2:+,$2},_netdev,nofail,x-systemd.requires=corosync.service 0 0"
}
if ! command -v systemd-analyze >/dev/null 2>&1; then
  ok "systemd-analyze verify # skip: systemd-analyze is not installed"
else
  # verify with --root checks the unit's programs and man pages inside the
  # root, and needs every unit it names: a copy of DESTDIR seeing the host's
  # units (a bind in a private mount namespace).
  R=$S/verify-root
  cp -a "$D" "$R"
  mkdir -p "$R/usr/lib/systemd/system"
  verify_unit() {
    MANPATH=$D/usr/local/share/man unshare -m --propagation private sh -c '
      mount --bind /usr/lib/systemd/system "$1/usr/lib/systemd/system" &&
      systemd-analyze verify --root="$1" csvfs@Volume1.service' sh "$R" >"$S/verify.log" 2>&1
  }
  check "systemd-analyze verify csvfs@Volume1.service (installed unit, programs, man pages)" verify_unit
  [ -s "$S/verify.log" ] && sed 's/^/# /' "$S/verify.log"
  unit_order_ok() {
    grep -qx 'Requires=corosync.service' "$UNIT" && grep -q '^After=corosync.service' "$UNIT" &&
      grep -qx 'Restart=on-failure' "$UNIT" && grep -q 'Quorate' "$UNIT"
  }
  check "csvfs@.service: requires and follows corosync (so stops before it), waits for quorum, restarts on failure" unit_order_ok
  GEN=/lib/systemd/system-generators/systemd-fstab-generator
  if [ -x "$GEN" ]; then
    mkdir -p "$S/gen"
    fstab_line 00000000-0000-4000-8000-000000000001 >"$S/fstab.gen"
    gen_ok() {
      SYSTEMD_FSTAB="$S/fstab.gen" SYSTEMD_PROC_CMDLINE="" "$GEN" "$S/gen" "$S/gen" "$S/gen" &&
        grep -qx 'Requires=corosync.service' "$S/gen/ClusterStorage-Volume1.mount" &&
        grep -qx 'After=corosync.service' "$S/gen/ClusterStorage-Volume1.mount" &&
        [ -e "$S/gen/remote-fs.target.wants/ClusterStorage-Volume1.mount" ] &&
        systemd-analyze verify "$S/gen/ClusterStorage-Volume1.mount" >"$S/verify-mount.log" 2>&1
    }
    check "the documented fstab line: a network mount unit after and requiring corosync (systemd-fstab-generator, systemd-analyze verify)" gen_ok
    [ -s "$S/verify-mount.log" ] && sed 's/^/# /' "$S/verify-mount.log"
  else
    ok "fstab generator check # skip: $GEN not installed"
  fi
fi

# ---- a LUN on a loop device, a three-node lab using the installed files --------------
LAB="$SB/csvfs-lab"     # the installed lab: it runs the installed csvfs next to it
truncate -s 1G "$S/lun.img"
LOOP=$(losetup -f --show "$S/lun.img") || { not_ok "losetup"; finish; exit; }
on_exit "losetup -d '$LOOP'"
GUID=$("$SB/mkfs.csvfs" -L Volume1 "$LOOP" 2>"$S/mkfs.log" | tail -1)
check "installed mkfs.csvfs -L Volume1 formats the loop device" \
  grep -Eq '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' <<<"$GUID"
"$LAB" down >/dev/null 2>&1 || true
# The teardown at exit uses the build's csvfs-lab: the installed one is gone
# after the uninstall at the end.
on_exit "'$BIN/csvfs-lab' down --save-logs '$S/logs' >/dev/null 2>&1; mkdir -p '$TOP/$BUILD/test-logs/install'; cp -a '$S/logs/.' '$TOP/$BUILD/test-logs/install/' 2>/dev/null"
if ! "$LAB" up -n 3 --no-mount --lun "$LOOP" >"$S/up.log" 2>&1; then
  not_ok "installed csvfs-lab up -n 3 --no-mount --lun $LOOP"; sed 's/^/# /' "$S/up.log" | tail; finish; exit
fi
ok "installed csvfs-lab: three nodes quorate"

on() { local k=$1; shift; timeout 120 "$LAB" exec "$k" -- "$@"; }
sh_on() { local k=$1; shift; timeout 120 "$LAB" exec "$k" -- sh -c "$*"; }
# A node's processes named COMM (and with ARG among their arguments): those in
# the node's mount namespace (the lab's nodes share the pid namespace).
node_pids() {  # node_pids NODE COMM [ARG]
  on "$1" sh -c 'self=$(readlink /proc/self/ns/mnt); for p in /proc/[0-9]*; do
    [ "$(cat $p/comm 2>/dev/null)" = "$1" ] && [ "$(readlink $p/ns/mnt 2>/dev/null)" = "$self" ] || continue
    [ -z "$2" ] || tr "\0" "\n" <$p/cmdline 2>/dev/null | grep -qxF "$2" && echo ${p#/proc/}; done; true' \
    sh "$2" "${3:-}"
}
node_daemons() { node_pids "$1" csvfs "$V"; }   # this node's csvfs daemons serving $V
mounted_on() { sh_on "$1" "awk '\$2 == \"$V\" && \$3 == \"fuse.csvfs\" {f = 1} END {exit !f}' /proc/self/mounts"; }
no_daemon_on() { [ -z "$(node_daemons "$1")" ]; }
not_mounted_on() { ! mounted_on "$1"; }
gone_on() { not_mounted_on "$1" && no_daemon_on "$1"; }
# Pacemaker in a node: its state and log in node-private binds, pacemakerd
# started in the node's namespaces (it reaches that node's corosync).
pcmk_start() {
  local k=$1 d=$S/pcmk/n$1
  mkdir -p "$d/lib/blackbox" "$d/lib/cib" "$d/lib/cores" "$d/lib/pengine" "$d/log"
  chown -R hacluster:haclient "$d" && chmod 0750 "$d"/lib/* && chmod 0770 "$d/log" &&
    sh_on "$k" "mount --bind '$d/lib' /var/lib/pacemaker && mount --bind '$d/log' /var/log/pacemaker &&
      mount -t overlay -o lowerdir='$D/usr/lib/ocf/resource.d':/usr/lib/ocf/resource.d dplinstall /usr/lib/ocf/resource.d &&
      { PCMK_logfile=/var/log/pacemaker/pacemaker.log setsid /usr/sbin/pacemakerd </dev/null >/var/log/pacemaker/stdout 2>&1 & }"
}
# What Pacemaker saw and did on node K (for a failed recovery check): fail
# counts and failed actions, then its log lines about the volume resource.
pcmk_diag() {
  on 1 crm_mon -1 --failcounts 2>&1 | tail -15 | sed 's/^/# crm_mon: /'
  # Every distinct message of the agent (a start loop repeats its reason each second).
  grep -E 'volume\(vol1\)' "$S/pcmk/n$1/log/pacemaker.log" 2>/dev/null | sed 's/^.*volume(vol1)\[[0-9]*\]: *//' |
    uniq -c | tail -15 | sed 's/^/# node'"$1"' agent: /'
  grep -E 'vol1|csvfs' "$S/pcmk/n$1/log/pacemaker.log" 2>/dev/null | grep -v 'volume(vol1)' | tail -15 | sed 's/^/# node'"$1"' pacemaker.log: /'
  on "$1" "$SB/csvctl" status --json "$V" 2>&1 | cut -c1-600 | sed 's/^/# node'"$1"' csvctl status: /'
  on "$1" sh -c 'grep -v " debug: " /run/csvfs-pcmk.log | tail -30' 2>/dev/null | cut -c1-300 | sed 's/^/# node'"$1"' csvfs log: /'
}
pcmk_gone() { [ -z "$(node_pids "$1" pacemakerd)" ] && [ -z "$(node_pids "$1" pacemaker-contr)" ]; }
pcmk_stop() {  # SIGTERM to pacemakerd: it stops this node's resources, then itself
  local k=$1 p
  p=$(node_pids "$k" pacemakerd)
  [ -n "$p" ] || return 0
  kill -TERM $p
  wait_until 120 pcmk_gone "$k" || { diag "node$k: pacemakerd (pid $p) did not stop in 120 s; killing it"; kill -9 $p; }
}

# Leave no daemon of ours inside a node before the lab goes down.
cleanup_nodes() {
  local k p
  for k in 1 2 3; do pcmk_stop "$k"; done
  for k in 3 2 1; do mounted_on "$k" && { on "$k" umount "$V" || on "$k" umount -l "$V"; }; done
  for k in 1 2 3; do
    wait_until 20 no_daemon_on "$k" || for p in $(node_daemons "$k"); do kill -9 "$p"; done
  done
}
on_exit cleanup_nodes

# Inside each node only: the DESTDIR's sbin over /usr/local/sbin, its /sbin
# (the mount helper) layered over /usr/sbin (/sbin is a link to it, and mount(8)
# looks for helpers only there), and a tmpfs /ClusterStorage with Volume1.
[ -d /ClusterStorage ] || mkdir /ClusterStorage   # left in place: other labs share it
FSTAB=$S/fstab
fstab_line "$GUID" "log=/run/csvfs-fstab.log" >"$FSTAB"
prepare_node() {
  sh_on "$1" "mount --bind '$SB' /usr/local/sbin &&
    mount -t overlay -o lowerdir='$D/sbin':/usr/sbin dplinstall /usr/sbin &&
    mount -t tmpfs -o size=1m,mode=0755 dplinstall /ClusterStorage && mkdir -p '$V'"
}
for k in 1 2 3; do check "node$k: sees the installed files where an installed system has them" prepare_node "$k"; done
check "node1: /sbin/mount.fuse.csvfs, where mount(8) looks, is the installed helper" \
  on 1 cmp /sbin/mount.fuse.csvfs "$HELPER"
check "node1: /usr/local/sbin/csvfs is the installed daemon" on 1 cmp /usr/local/sbin/csvfs "$SB/csvfs"

# ---- bad options are refused before anything is mounted, the option named ------------
refused_with() {  # refused_with NODE WORD-IN-ERROR mount args...
  local k=$1 word=$2 out; shift 2
  if out=$(on "$k" mount "$@" 2>&1); then diag "mount $* succeeded"; on "$k" umount "$V"; return 1; fi
  grep -qF -- "$word" <<<"$out" || { diag "mount $*: '$out' does not say '$word'"; return 1; }
  ! mounted_on "$k"
}
check "mount -o cluster,lockmgr=foo is refused: \"lockmgr is cpg or dlm\"" \
  refused_with 1 "bad option 'lockmgr=foo': lockmgr is cpg or dlm" -t fuse.csvfs -o cluster,lockmgr=foo,cred=/run/csvfs-cred "UUID=$GUID" "$V"
check "mount -o cluster,bogus is refused: \"unknown option 'bogus'\"" \
  refused_with 1 "unknown option 'bogus'" -t fuse.csvfs -o cluster,bogus,cred=/run/csvfs-cred "UUID=$GUID" "$V"
check "mount -o cluster,port=0 is refused: \"port 0\"" \
  refused_with 1 "bad option 'port=0': port 0" -t fuse.csvfs -o cluster,port=0,cred=/run/csvfs-cred "UUID=$GUID" "$V"
check "mount without cluster or standalone is refused, saying which to give" \
  refused_with 1 "-o standalone (one node) or -o cluster" -t fuse.csvfs -o cred=/run/csvfs-cred "UUID=$GUID" "$V"
check "mount of a GUID no device holds: mount(8) names the UUID it cannot find" \
  refused_with 1 "UUID=00000000-0000-4000-8000-00000000dead" -t fuse.csvfs -o cluster "UUID=00000000-0000-4000-8000-00000000dead" "$V"

# ---- fstab: mount -a on two nodes, mount MOUNTPOINT on the third ---------------------
members_mounted() {  # members_mounted NODE N — N nodes up and mounted, this node direct
  local j
  j=$(on "$1" "$SB/csvctl" status --json 2>/dev/null) || return 1
  [ "$(grep -o '"mounted":true' <<<"$j" | wc -l)" -eq "$2" ] && grep -q '"this_node":true[^}]*"io_state":"direct"' <<<"$j"
}
check "node1: mount -a -T FSTAB mounts $V (UUID= found by mount(8) on $LOOP)" on 1 mount -a -T "$FSTAB"
check "node2: mount -a -T FSTAB" on 2 mount -a -T "$FSTAB"
check "node3: mount -T FSTAB $V" on 3 mount -T "$FSTAB" "$V"
for k in 1 2 3; do
  check "node$k: fuse.csvfs at $V, 3 nodes mounted, this node's I/O direct" wait_until 30 members_mounted "$k" 3
done
# mount(8) compares the fstab's device with the mount's csvfs:GUID, so a second
# mount -a tries again: the daemon refuses to stack a second one.
mount_again_refused() {
  local out
  if out=$(on 1 mount -a -T "$FSTAB" 2>&1); then diag "a second mount -a succeeded"; return 1; fi
  grep -qF "$V already has a csvfs volume mounted (csvfs:$GUID)" <<<"$out" || { diag "got: $out"; return 1; }
  [ "$(node_daemons 1 | wc -l)" -eq 1 ] && members_mounted 1 3
}
check "a second mount -a on node1: refused (\"already has a csvfs volume mounted\"), one daemon, still 3 members" mount_again_refused
check_eq "the mount names the volume (csvfs:GUID, type fuse.csvfs)" "csvfs:$GUID fuse.csvfs" \
  "$(on 2 awk -v m="$V" '$2 == m {print $1, $3}' /proc/self/mounts)"
check "the daemon started by mount(8) logs to log= (node, volume, event)" \
  sh_on 1 "grep -q 'node=node1 volume=$GUID' /run/csvfs-fstab.log"
head -c 8M /dev/urandom >"$S/data"
want=$(sha256sum <"$S/data" | cut -d' ' -f1)
check "node1 writes 8 MiB through the fstab mount" sh_on 1 "cat '$S/data' >$V/data && sync $V/data"
check_eq "node3 reads the same bytes" "$want" "$(on 3 sha256sum "$V/data" | cut -d' ' -f1)"

# ---- the OCF agent on node1 of the running cluster ----------------------------------
export OCF_ROOT=/usr/lib/ocf
OCFOPTS=(-o "volume=UUID=$GUID" -o "directory=$V" -o "options=cred=/run/csvfs-cred,log=/run/csvfs-ocf.log")
if ! command -v ocf-tester >/dev/null 2>&1; then
  not_ok "ocf-tester is not installed (package resource-agents: make deps)"
else
  check "node1: umount $V (fstab mount)" on 1 umount "$V"
  check "node1: its daemon exits after the unmount" wait_until 30 no_daemon_on 1
  if on 1 ocf-tester -n csvfs-vol1 "${OCFOPTS[@]}" "$AGENT" >"$S/ocf-tester.log" 2>&1; then
    ok "ocf-tester: ocf:csvfs:volume passes (meta-data, validate-all, probe, start, monitor, stop, restart) against the 3-node lab"
  else
    not_ok "ocf-tester on ocf:csvfs:volume"; sed 's/^/# /' "$S/ocf-tester.log" | tail -30
  fi
  agent() {  # agent ACTION [VAR=VALUE...] — the agent as Pacemaker runs it, on node1
    local action=$1; shift
    on 1 env OCF_ROOT=/usr/lib/ocf OCF_RESOURCE_INSTANCE=csvfs-vol1 "OCF_RESKEY_volume=UUID=$GUID" \
      "OCF_RESKEY_directory=$V" "OCF_RESKEY_options=cred=/run/csvfs-cred,log=/run/csvfs-ocf.log" \
      OCF_RESKEY_CRM_meta_timeout=60000 "$@" "$AGENT" "$action" >>"$S/agent.log" 2>&1
  }
  agent_rc() { agent "$@"; echo $?; }
  check_eq "agent monitor of a stopped volume: not running (7)" 7 "$(agent_rc monitor)"
  check_eq "agent start" 0 "$(agent_rc start)"
  check "after start: node1 mounted and a member, 3 nodes mounted" wait_until 30 members_mounted 1 3
  check_eq "agent monitor depth 0" 0 "$(agent_rc monitor OCF_CHECK_LEVEL=0)"
  check_eq "agent monitor depth 10" 0 "$(agent_rc monitor OCF_CHECK_LEVEL=10)"
  check_eq "agent monitor depth 20 (writes .csvfs-monitor/node1)" 0 "$(agent_rc monitor OCF_CHECK_LEVEL=20)"
  check "depth 20's file is seen from node2" on 2 test -s "$V/.csvfs-monitor/node1"
  check_eq "agent monitor with an unknown depth: configuration error (6)" 6 "$(agent_rc monitor OCF_CHECK_LEVEL=5)"
  check_eq "agent validate-all with volume=nonsense: configuration error (6)" 6 \
    "$(agent_rc validate-all OCF_RESKEY_volume=nonsense)"
  check_eq "agent validate-all with options=standalone: configuration error (6)" 6 \
    "$(agent_rc validate-all OCF_RESKEY_options=standalone)"
  check "agent meta-data conforms to ra-api-1.dtd" \
    sh -c "cd /usr/share/resource-agents && OCF_ROOT=/usr/lib/ocf '$AGENT' meta-data | xmllint --noout --valid -"
  # A daemon killed: its mount stays in the table, every access fails.
  pids=$(node_daemons 1)
  check "node1's daemon found (pid $pids)" test -n "$pids"
  [ -n "$pids" ] && kill -9 $pids
  check "after kill -9 of the daemon the mount is still in node1's table" mounted_on 1
  check_eq "agent monitor catches the dead daemon (1, not 0 or 7)" 1 "$(agent_rc monitor)"
  check_eq "agent stop clears the dead mount" 0 "$(agent_rc stop)"
  check_eq "agent monitor after stop: not running (7)" 7 "$(agent_rc monitor)"
  check_eq "agent start again after the crash" 0 "$(agent_rc start)"
  check "node1 back: 3 nodes mounted" wait_until 30 members_mounted 1 3
  check_eq "node1 reads the data after its restart" "$want" "$(on 1 sha256sum "$V/data" | cut -d' ' -f1)"
  # A process keeps the mount busy: stop names it and fails, unless force_unmount.
  timeout 120 "$LAB" exec 1 -- sh -c "cd '$V' && exec sleep 100" </dev/null >/dev/null 2>&1 &
  BUSY=$!
  busy_pid() { node_pids 1 sleep | head -n 1; }
  busy_ready() { local p; p=$(busy_pid); [ -n "$p" ] && [ "$(readlink "/proc/$p/cwd")" = "$V" ]; }
  check "a process on node1 has its working directory in $V" wait_until 10 busy_ready
  check_eq "agent stop of a busy mount fails (1)" 1 "$(agent_rc stop)"
  check "…saying it is busy and naming the pid" grep -q "is busy (pids.*$(busy_pid)" "$S/agent.log"
  check "…and the volume stays mounted on node1" mounted_on 1
  check_eq "agent stop with force_unmount=true kills the user and unmounts" 0 "$(agent_rc stop OCF_RESKEY_force_unmount=true)"
  wait "$BUSY" 2>/dev/null
  check "…node1 unmounted, its daemon gone" gone_on 1
  check_eq "agent start again" 0 "$(agent_rc start)"
  check_eq "agent stop (clean)" 0 "$(agent_rc stop)"
  check "node1: no daemon left after stop" no_daemon_on 1
  [ -s "$S/agent.log" ] && grep -E 'ERROR|WARN' "$S/agent.log" | head -5 | sed 's/^/# agent: /'
fi

# ---- csvfs@Volume1.service's commands, as systemd runs them, on node1 ----------------
# (PID 1 here is not systemd: the unit's own lines are run in the node instead,
# with %i and the EnvironmentFile's variables as systemd gives them.)
unit_lines() { sed -n "s/^$1=-\{0,1\}//p" "$UNIT" | sed 's/%i/Volume1/g'; }
UNIT_ENV="CSVFS_SOURCE=UUID=$GUID; CSVFS_OPTIONS=cred=/run/csvfs-cred"
unit_pre() { local l; while read -r l; do sh_on 1 "$UNIT_ENV; $l" </dev/null || return 1; done < <(unit_lines ExecStartPre); }
unit_start() {  # the main process in the background, as Type=simple; sets UNIT_PID
  timeout 120 "$LAB" exec 1 -- sh -c "$UNIT_ENV; exec $(unit_lines ExecStart)" >>"$S/unit.log" 2>&1 &
  UNIT_PID=$!
}
unit_stop() {   # KillMode=mixed: SIGTERM to the main process; its exit status
  local p st=0
  p=$(node_daemons 1); [ -n "$p" ] && kill -TERM $p
  wait "$UNIT_PID" || st=$?
  return $st
}
check "unit ExecStartPre (stale-mount check, quorum wait) passes on a quorate node" unit_pre
unit_start
check "unit ExecStart: csvfs -f mounts /ClusterStorage/Volume1 (UUID= resolved by the daemon), 3 nodes mounted" \
  wait_until 30 members_mounted 1 3
pids=$(node_daemons 1)
[ -n "$pids" ] && kill -9 $pids
wait "$UNIT_PID" 2>/dev/null
check "after kill -9 of the unit's daemon its dead mount is in the table" mounted_on 1
check "unit ExecStopPost detaches the dead mount" sh_on 1 "$UNIT_ENV; $(unit_lines ExecStopPost)"
check "…and node1's mount table no longer has it" not_mounted_on 1
check "unit restart (ExecStartPre) after the crash" unit_pre
unit_start
check "unit ExecStart again: mounted, 3 nodes" wait_until 30 members_mounted 1 3
check "unit stop (SIGTERM): the daemon unmounts and exits 0" unit_stop
check "unit stop: no mount, no daemon left on node1" gone_on 1
[ -s "$S/unit.log" ] && tail -3 "$S/unit.log" | sed 's/^/# unit: /'

# ---- the label names the mount point; the daemonized log --------------------------
# csvfs with no mount point, daemonized (no -f, no log=), as an admin runs it by hand.
[ -d /var/log/csvfs ] || on_exit "rmdir /var/log/csvfs"
on_exit "rm -f '/var/log/csvfs/$GUID.log'"
check "node1: csvfs -o cluster UUID=GUID with no mount point returns once mounted" \
  on 1 "$SB/csvfs" -o cluster,cred=/run/csvfs-cred "UUID=$GUID"
check "…at /ClusterStorage/Volume1 (label Volume1), three members" wait_until 30 members_mounted 1 3
check "…logging to /var/log/csvfs/GUID.log (node, volume)" grep -q "node=node1 volume=$GUID" "/var/log/csvfs/$GUID.log"
check "node1: umount; the daemon exits" sh -c "'$LAB' exec 1 -- umount '$V'"
check "…and its daemon exits" wait_until 30 no_daemon_on 1
label_refused() {  # a label that is no plain name names no path
  "$SB/mkfs.csvfs" -L "$1" -s 64M "$S/label.img" >/dev/null 2>&1 || { diag "mkfs -L '$1' failed"; return 1; }
  local out
  out=$("$SB/csvfs" -f -o standalone "$S/label.img" 2>&1) && { diag "csvfs mounted a volume labelled '$1'"; return 1; }
  rm -f "$S/label.img"
  grep -qF "label '$1': give a MOUNTPOINT" <<<"$out" || { diag "got: $out"; return 1; }
}
check "a volume labelled 'a b' and no mount point: refused, asking for one" label_refused "a b"
check "a volume labelled '..' and no mount point: refused, asking for one" label_refused ".."

# ---- Pacemaker in the lab: ocf:csvfs:volume cloned on three nodes --------------------
# Nodes 2 and 3 still have their fstab mounts: they go first, Pacemaker mounts.
for k in 3 2; do mounted_on "$k" && on "$k" umount "$V"; wait_until 30 no_daemon_on "$k"; done
if ! command -v pacemakerd >/dev/null 2>&1 || ! command -v cibadmin >/dev/null 2>&1; then
  not_ok "pacemaker is not installed (packages pacemaker, pacemaker-cli-utils: make deps)"
else
  for k in 1 2 3; do check "node$k: pacemakerd starts in the node" pcmk_start "$k"; done
  pcmk_cmd() { on 1 "$@"; }
  pcmk_online() { on 1 crm_mon -1 2>/dev/null | grep -q 'Online: \[ node1 node2 node3 \]'; }
  check "Pacemaker: three nodes online, a DC elected (crm_mon on node1)" wait_until 90 pcmk_online
  check "crm_attribute: stonith-enabled=false (the lab has no fencing device)" \
    pcmk_cmd crm_attribute --type crm_config --name stonith-enabled --update false
  CLONE="<clone id=\"vol1-clone\"><meta_attributes id=\"vol1-clone-meta\">
<nvpair id=\"vol1-clone-interleave\" name=\"interleave\" value=\"true\"/></meta_attributes>
<primitive id=\"vol1\" class=\"ocf\" provider=\"csvfs\" type=\"volume\">
<instance_attributes id=\"vol1-params\">
<nvpair id=\"vol1-volume\" name=\"volume\" value=\"UUID=$GUID\"/>
<nvpair id=\"vol1-directory\" name=\"directory\" value=\"$V\"/>
<nvpair id=\"vol1-options\" name=\"options\" value=\"cred=/run/csvfs-cred,log=/run/csvfs-pcmk.log\"/>
</instance_attributes><operations>
<op id=\"vol1-monitor\" name=\"monitor\" interval=\"3s\" timeout=\"40s\"/>
<op id=\"vol1-start\" name=\"start\" interval=\"0s\" timeout=\"120s\"/>
<op id=\"vol1-stop\" name=\"stop\" interval=\"0s\" timeout=\"120s\"/>
</operations></primitive></clone>"
  check "cibadmin: the cloned ocf:csvfs:volume resource is created" \
    pcmk_cmd cibadmin --create -o resources --xml-text "$CLONE"
  all_mounted() { members_mounted 1 3 && members_mounted 2 3 && members_mounted 3 3; }
  # crm_resource --locate also counts a start still in progress: crm_mon's
  # "Started" list says each start operation has returned.
  clone_started() { on 1 crm_mon -1 2>/dev/null | grep -q 'Started: \[ node1 node2 node3 \]'; }
  clone_started_or_diag() { wait_until 120 clone_started && return 0; for k in 1 2 3; do pcmk_diag "$k"; done; return 1; }
  check "Pacemaker starts the clone on all three nodes (crm_mon: Started on each)" clone_started_or_diag
  check "…and each node has the volume mounted, three members (csvctl status)" wait_until 30 all_mounted
  check_eq "node3 reads the data through Pacemaker's mount" "$want" "$(on 3 sha256sum "$V/data" | cut -d' ' -f1)"
  old=$(node_daemons 2)
  check "node2's daemon found (pid $old)" test -n "$old"
  [ -n "$old" ] && kill -9 $old
  recovered() { local p; p=$(node_daemons 2); [ -n "$p" ] && [ "$p" != "$old" ] && members_mounted 2 3; }
  failed_monitor_seen() { on 1 crm_failcount --query --resource vol1 --node node2 2>/dev/null | grep -q 'value=[1-9]'; }
  failed_monitor_or_diag() { wait_until 60 failed_monitor_seen && return 0; pcmk_diag 2; return 1; }
  check "Pacemaker's monitor catches node2's dead daemon (vol1's fail count on node2)" failed_monitor_or_diag
  recovered_or_diag() { wait_until 120 recovered && return 0; pcmk_diag 2; return 1; }
  check "…and recovers it: a new daemon on node2, three members" recovered_or_diag
  check "the clone runs on three nodes again" wait_until 60 clone_started
  check "crm_resource: target-role=Stopped for the clone" \
    pcmk_cmd crm_resource --resource vol1-clone --meta --set-parameter target-role --parameter-value Stopped
  stopped_everywhere() { ! mounted_on 1 && ! mounted_on 2 && ! mounted_on 3 && no_daemon_on 1 && no_daemon_on 2 && no_daemon_on 3; }
  check "Pacemaker stops the clone: no mount, no daemon on any node" wait_until 120 stopped_everywhere
  for k in 1 2 3; do pcmk_stop "$k"; check "node$k: pacemakerd stopped" pcmk_gone "$k"; done
fi

# ---- umount everywhere; the LUN is clean -------------------------------------------
for k in 3 2 1; do
  mounted_on "$k" || continue
  check "node$k: umount $V" on "$k" umount "$V"
  check "node$k: its daemon exits" wait_until 30 no_daemon_on "$k"
done
unmounted_everywhere() { not_mounted_on 1 && not_mounted_on 2 && not_mounted_on 3; }
check "no node has the volume mounted" unmounted_everywhere
check "e2fsck -fn on the LUN after the last unmount: clean" fsck_clean "$LOOP" "$S/fsck.log"
[ -s "$S/fsck.log" ] && grep -vi '^e2fsck\|^Pass\|files,' "$S/fsck.log" | head -5 | sed 's/^/# /'

lab_down() { "$LAB" down --save-logs "$S/logs" >"$S/down.log" 2>&1; }
check "installed csvfs-lab down" lab_down
no_lab_left() { ! ip netns list | grep -q "^csvfslab-$CSVFS_LAB-"; }
check "no namespace of the lab is left" no_lab_left

# ---- make uninstall ----------------------------------------------------------------
uninstall() { make_in_top uninstall >"$S/uninstall.log" 2>&1; }
check "make uninstall DESTDIR=..." uninstall
left=$(find "$D" ! -type d | sed "s|^$D||")
check_eq "uninstall leaves no file in DESTDIR" "" "$left"
finish
