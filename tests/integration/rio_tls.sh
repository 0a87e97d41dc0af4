#!/usr/bin/env bash
# redirect-io between real processes on 127.0.0.1: credential generation, a
# mutually authenticated echo exchange, and peers that must get nothing (a
# foreign cluster, a forged or missing certificate, TLS 1.2, plain TCP garbage,
# a silent socket, malformed frames) — each logged with its address and cause,
# after each of which the server still serves the next good client. Ends with
# a graceful stop. Needs build/tests/rio_echo and rio_keygen; openssl s_client
# plays the independent TLS peers.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

KEYGEN="$TBIN/rio_keygen"
ECHO="$TBIN/rio_echo"
for b in "$KEYGEN" "$ECHO"; do
  [ -x "$b" ] || { not_ok "missing $b (make $BUILD/tests/rio_echo $BUILD/tests/rio_keygen)"; exit 1; }
done
D=$(scratch_dir)
SLOG="$D/server.log"
SERVER_PID=

# ---- credentials -------------------------------------------------------------
check "keygen: cluster CA" "$KEYGEN" ca "$D/ca" lab
check "keygen: node-a certificate" "$KEYGEN" node "$D/ca" "$D/node-a" node-a
check "keygen: node-b certificate" "$KEYGEN" node "$D/ca" "$D/node-b" node-b
check "keygen: a second, foreign cluster" "$KEYGEN" ca "$D/ca2" other
check "keygen: foreign node-b" "$KEYGEN" node "$D/ca2" "$D/foreign" node-b
check_eq "node.key is mode 0600" 600 "$(stat -c %a "$D/node-b/node.key")"
check_eq "ca.key is mode 0600" 600 "$(stat -c %a "$D/ca/ca.key")"
check_eq "ca.key stays in the CA directory" no "$([ -e "$D/node-b/ca.key" ] && echo yes || echo no)"
check_eq "credential check names the node" node-b "$("$KEYGEN" check "$D/node-b" 2>&1)"
check_fails "keygen refuses to overwrite a CA" "$KEYGEN" ca "$D/ca" 2>/dev/null
check_fails "keygen refuses a bad node name" "$KEYGEN" node "$D/ca" "$D/x" "bad name" 2>/dev/null

# ---- server ----------------------------------------------------------------------
stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  kill -TERM "$SERVER_PID" 2>/dev/null
  local i; for i in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$SERVER_PID" 2>/dev/null && kill -9 "$SERVER_PID" 2>/dev/null
  wait "$SERVER_PID" 2>/dev/null
}
on_exit stop_server

"$ECHO" server --cred "$D/node-a" --port-file "$D/port" --handshake-timeout 1000 \
  --seconds 300 >"$D/server.out" 2>"$SLOG" &
SERVER_PID=$!
if ! wait_until 10 test -s "$D/port"; then
  not_ok "echo server started"; cat "$SLOG"; exit 1
fi
PORT=$(cat "$D/port")
ok "echo server listening on 127.0.0.1:$PORT"

logged() { wait_until 5 grep -qE -- "$1" "$SLOG"; }
accepted_count() { grep -c 'rio: accepted ' "$SLOG"; }

# good_client DESC — node-b must authenticate node-a, be known as node-b, and
# get its echoes back; the server must log the authenticated connection.
good_client() {
  local before out rc
  before=$(accepted_count)
  out=$(timeout 20 "$ECHO" client --cred "$D/node-b" --port "$PORT" --expect-peer node-a \
        --message "hello-$1" --count 5 2>&1); rc=$?
  if [ "$rc" -eq 0 ] && grep -qx 'server: node-a' <<<"$out" && grep -qx 'whoami: node-b' <<<"$out" &&
     grep -qx "echo: hello-$1 x5" <<<"$out" && [ "$(accepted_count)" -gt "$before" ]; then
    ok "good client served $1"
  else
    not_ok "good client served $1 (rc $rc: $out)"
  fi
}

good_client "first"
check "server log attributes the connection to node-b" logged 'rio: accepted 127\.0\.0\.1:[0-9]+ \(node-b\) client [0-9a-f]{16} protocol v1'

# ---- peers that must get nothing ------------------------------------------------
out=$(timeout 20 "$ECHO" client --cred "$D/foreign" --port "$PORT" --timeout 5000 2>&1); rc=$?
check_eq "foreign-cluster client fails" 1 "$rc"
check "foreign-cluster client sees the handshake fail on the server's certificate" \
  grep -q 'connect failed: TLS handshake or authentication failed: certificate verify failed (unable to get local issuer certificate)' <<<"$out"
check_fails "foreign-cluster client got no reply" grep -q 'whoami:' <<<"$out"
check "server logs the foreign client refused at the handshake" \
  logged 'rio: refused 127\.0\.0\.1:[0-9]+: the peer refused the handshake: tlsv1 alert unknown ca'
good_client "after a foreign-cluster client"

out=$(timeout 20 "$ECHO" client --cred "$D/node-b" --port "$PORT" --expect-peer node-z --timeout 5000 2>&1)
check "client refuses a coordinator with the wrong node name" grep -q 'hostname mismatch' <<<"$out"

# s_client: an independent TLS 1.3 implementation of the peer.
s_client() { timeout 10 openssl s_client -connect "127.0.0.1:$PORT" -quiet "$@" </dev/null >/dev/null 2>&1; }

s_client -tls1_3 -CAfile "$D/ca/ca.crt" -cert "$D/foreign/node.crt" -key "$D/foreign/node.key"
check "server refuses a certificate not issued by the cluster CA" \
  logged 'rio: refused 127\.0\.0\.1:[0-9]+ \(certificate names node-b\): certificate verify failed \(unable to get local issuer certificate\)'
good_client "after a forged certificate"

s_client -tls1_3 -CAfile "$D/ca/ca.crt"
check "server refuses a TLS peer without a certificate" \
  logged 'rio: refused 127\.0\.0\.1:[0-9]+: peer did not return a certificate'
good_client "after a peer without a certificate"

s_client -tls1_2 -CAfile "$D/ca/ca.crt" -cert "$D/node-b/node.crt" -key "$D/node-b/node.key"
check "server refuses TLS 1.2, even with a valid certificate" \
  logged 'rio: refused 127\.0\.0\.1:[0-9]+: unsupported protocol'
good_client "after a TLS 1.2 peer"

# Plain TCP: garbage, then a socket that never speaks. The read returns
# when the server hangs up; timeout (exit 124) means it did not.
plain_tcp() {  # plain_tcp TEXT — sends TEXT, waits (bounded) for the hang-up
  exec 3<>"/dev/tcp/127.0.0.1/$PORT" || return 1
  [ -n "$1" ] && printf '%s' "$1" >&3
  timeout 5 cat <&3 >/dev/null 2>&1; local rc=$?
  exec 3<&- 3>&-
  [ "$rc" -ne 124 ]
}
check "server hangs up on plain-TCP garbage" plain_tcp $'GET / HTTP/1.0\r\n\r\n'
check "server logs the garbage peer" \
  logged 'rio: refused 127\.0\.0\.1:[0-9]+: (http request|wrong version number|packet length too long)'
good_client "after plain-TCP garbage"
check "server hangs up on a silent socket after the handshake timeout" plain_tcp ""
check "server logs the silent peer" logged 'rio: refused 127\.0\.0\.1:[0-9]+: TLS handshake timed out'
good_client "after a silent socket"

# Authenticated node, malformed frames: dropped with the node's name in the log.
raw() { timeout 15 "$ECHO" raw --cred "$D/node-b" --port "$PORT" --timeout 5000 "$@" >/dev/null 2>&1; }
check "frame with a bad magic before the hello: hung up" raw --send magic
check "server logs it" logged 'rio: refused 127\.0\.0\.1:[0-9]+ \(node-b\): malformed frame header: bad magic'
check "request in place of the hello: hung up" raw --send request
check "server logs it" logged 'rio: refused 127\.0\.0\.1:[0-9]+ \(node-b\): expected a valid HELLO'
check "frame with version 99 after the hello: hung up" raw --send version --after-hello
check "server logs it" logged 'rio: dropped 127\.0\.0\.1:[0-9]+ \(node-b\): malformed frame header: unsupported protocol version'
check "frame announcing a payload over the limit: hung up" raw --send oversize --after-hello
check "server logs it" logged 'rio: dropped 127\.0\.0\.1:[0-9]+ \(node-b\): malformed frame header: payload length over the limit'
check "frame with unknown flag bits: hung up" raw --send flags --after-hello
check "server logs it" logged 'rio: dropped 127\.0\.0\.1:[0-9]+ \(node-b\): malformed frame header: unknown flag bits'
good_client "after malformed frames"

# Every refusal and drop is one line with the peer address.
check_eq "every refused/dropped line names the peer address" 0 \
  "$(grep -E 'rio: (refused|dropped) ' "$SLOG" | grep -cvE 'rio: (refused|dropped) 127\.0\.0\.1:[0-9]+[ :]')"

# ---- graceful stop -------------------------------------------------------------------
kill -TERM "$SERVER_PID"
if wait_until 15 bash -c "! kill -0 $SERVER_PID 2>/dev/null"; then
  wait "$SERVER_PID"; rc=$?
  check_eq "server stops gracefully on SIGTERM (exit 0, no leaks under SAN)" 0 "$rc"
else
  not_ok "server stops within 15 s of SIGTERM"
fi
SERVER_PID=
check "server log records the stop" grep -q "rio: server on port $PORT stopped" "$SLOG"
check "server counted the good clients' requests" grep -qE 'stats: accepted=[0-9]+ refused=[0-9]+ dropped=3 requests=[0-9]+' "$D/server.out"
diag "server counters: $(cat "$D/server.out")"
finish
