#!/usr/bin/env bash
# logflood.sh — an unauthenticated connection flood does not flood the
# coordinator's log (docs/hostile-input.md): on a 2-node csvfs-lab (lab name
# hstflood) the participant's namespace opens 3000 connections to the
# coordinator's port and sends each an HTTP request instead of TLS. The
# coordinator logs at most 10 "rio: refused" lines per 10 s; the next one let
# through after the flood says how many were left out, and the lines logged
# plus the ones left out add up to every connection made. Members are still
# served; a member's restarted daemon gets in while 80 silent connections
# from another address are held open; the volume is e2fsck-clean afterwards.
source "$(dirname "$0")/../lib.sh"

LAB="$BIN/csvfs-lab"
export CSVFS_LAB=${CSVFS_TEST_LAB:-hstflood}
unset CSVFS_BIN CSVFS_LAB_TOKEN
V=/ClusterStorage/Volume1
FLOOD=3000
[ -x "$LAB" ] || { not_ok "$LAB missing"; finish; exit; }
S=$(scratch_dir)
on_exit "rm -rf '$S'"
LUN=$S/lun.img
truncate -s 256M "$LUN"
"$LAB" down >/dev/null 2>&1
on_exit "'$LAB' down --save-logs '$S/logs' >/dev/null 2>&1; mkdir -p '$TOP/$BUILD/test-logs/logflood'; cp -a '$S/logs/.' '$TOP/$BUILD/test-logs/logflood/' 2>/dev/null"

on() { local k=$1; shift; timeout 120 "$LAB" exec "$k" -- "$@"; }
coordinator() { on "$1" "$BIN/csvctl" status --json 2>/dev/null | sed -n 's/.*"coordinator":"\([^"]*\)".*/\1/p' | head -1; }

"$LAB" up -n 2 --lun "$LUN" >"$S/up.out" 2>&1 || { not_ok "lab up: 2 nodes"; sed 's/^/# /' "$S/up.out" | tail -20; finish; exit; }
ok "lab up: 2 nodes"
wait_until 30 sh -c "[ -n \"\$('$LAB' exec 1 -- '$BIN/csvctl' status --json 2>/dev/null | grep -o '\"coordinator\":\"node[0-9]\"')\" ]"
C=$(coordinator 1); C=${C#node}
P=$((3 - C))
CLOG=/run/csvfs-lab/$CSVFS_LAB/nodes/$C/csvfs.log
diag "coordinator node$C, participant node$P"
[ -f "$CLOG" ] || { not_ok "the coordinator's log $CLOG"; finish; exit; }
refused_lines() { grep -c 'rio: refused' "$CLOG"; }

# knock N — N connections from the participant's namespace, each an HTTP
# request where TLS is expected; prints how many connected.
knock() {
  on "$P" python3 - "10.213.0.1$C" 7100 "$1" <<'EOF'
import socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
made, end = 0, time.time() + 90
for i in range(n):
    if time.time() > end:
        break
    try:
        s = socket.create_connection((host, port), timeout=5)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        s.close()
        made += 1
    except OSError:
        time.sleep(0.01)
print(made)
EOF
}

before=$(refused_lines)
echo "members come first" >"$S/probe"
t0=$(date +%s)
made=$(knock "$FLOOD")
secs=$(( $(date +%s) - t0 + 1 ))
diag "$made connections in about $secs s"
check "the flood connected at least $((FLOOD * 9 / 10)) times" test "${made:-0}" -ge $((FLOOD * 9 / 10))
check "a member is still served during and after it" \
  sh -c "timeout 60 '$LAB' exec $P -- sh -c 'cat > $V/probe && sync $V/probe && cat $V/probe' < '$S/probe' | grep -q 'members come first'"
# every refusal made so far is logged or counted before the next interval
sleep 11
made2=$(knock 1)
wait_until 20 grep -q 'more like it not logged' "$CLOG"
after=$(refused_lines)
logged=$((after - before))
limit=$(( 10 * (secs / 10 + 2) + 1 ))
check "the coordinator logged $logged refusal lines for $((made + made2)) connections (at most $limit)" \
  test "$logged" -le "$limit"
left_out=$(grep -o 'and [0-9]* more like it not logged' "$CLOG" | awk '{s += $2} END {print s + 0}')
check_eq "lines logged + lines left out (the count in the log) = connections made" \
  "$((made + made2))" "$((logged + left_out))"
grep 'more like it not logged' "$CLOG" | tail -1 | sed 's/^/# /'

# ---- members first: connections held open without a word -------------------------
# From a second address of the participant's namespace (not a member's), 80
# connections that never start TLS, each reopened when the coordinator drops
# it: more than the coordinator's 64 connection slots. Meanwhile the
# participant's daemon restarts and must get in: one address may hold only
# 4 handshakes, and all non-members 16 (redirect-io, docs/hostile-input.md).
ALIAS=10.213.0.200
dev=$(on "$P" ip -o -4 addr show | awk '$4 ~ /^10\.213\.0\./ {print $2; exit}')
check "a second address $ALIAS on node$P's $dev (not a member's)" on "$P" ip addr add "$ALIAS/24" dev "${dev:-none}"
on "$P" python3 - "10.213.0.1$C" 7100 "$ALIAS" 80 40 >"$S/hold.out" 2>&1 <<'EOF' &
import socket, sys, time
host, port, src, n, secs = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
held, opened, end = [], 0, time.time() + secs
while time.time() < end:
    held = [s for s in held if s.fileno() >= 0]
    for s in list(held):          # the server hung up: reopen
        try:
            if s.recv(1, socket.MSG_DONTWAIT) == b"":
                s.close(); held.remove(s)
        except BlockingIOError:
            pass
        except OSError:
            s.close(); held.remove(s)
    while len(held) < n and time.time() < end:
        try:
            s = socket.create_connection((host, port), timeout=2, source_address=(src, 0))
            held.append(s); opened += 1
        except OSError:
            time.sleep(0.01); break
    time.sleep(0.05)
print("opened", opened)
EOF
holder=$!
sleep 3
PLOG=/run/csvfs-lab/$CSVFS_LAB/nodes/$P/csvfs.log
plog_lines=$(wc -l <"$PLOG")
restarted() { "$LAB" kill "$P" csvfs >/dev/null 2>&1 && "$LAB" start "$P" csvfs >"$S/start.out" 2>&1; }
check "node$P's daemon restarts and mounts while the connections are held" restarted
member_again() { on "$P" "$BIN/csvctl" status --json 2>/dev/null | grep -q "\"coordinator\":\"node$C\""; }
check "node$P is a member again and knows its coordinator" wait_until 15 member_again
check "node$P reads the volume through its new connection" \
  sh -c "timeout 20 '$LAB' exec $P -- cat $V/probe | grep -q 'members come first'"
wait "$holder"
diag "held connections: $(cat "$S/hold.out")"
check "node$P's daemon was never turned away on its way in (its log: no failed connect)" \
  sh -c "! tail -n +$((plog_lines + 1)) '$PLOG' | grep 'rio: connect to 10.213.0.1$C:7100 failed'"
check "the coordinator turned the extra handshakes from $ALIAS away (its log)" \
  grep -q "handshakes already pending from $ALIAS (limit 4)" "$CLOG"
on "$P" ip addr del "$ALIAS/24" dev "${dev:-none}" 2>/dev/null

"$LAB" down --save-logs "$S/logs" >"$S/down.out" 2>&1 || not_ok "lab down ($(tail -n 3 "$S/down.out"))"
check "the volume is e2fsck-clean" fsck_clean "$LUN"
finish
