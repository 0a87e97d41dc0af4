#!/usr/bin/env bash
# csvctl keygen: the cluster credential (a CA) and node credentials from it,
# checked with openssl as the independent oracle.
source "$(dirname "$0")/../lib.sh"
d=$(scratch_dir)
check "keygen creates a cluster CA" "$BIN/csvctl" keygen --cluster lab --ca-dir "$d/ca"
check "CA key is private (0600)" test "$(stat -c %a "$d/ca/ca.key")" = 600
check "keygen issues node1" "$BIN/csvctl" keygen --node node1 --ca-dir "$d/ca" --out "$d/n1"
check "node key is private (0600)" test "$(stat -c %a "$d/n1/node.key")" = 600
check "openssl verifies node1's certificate against the CA" \
  openssl verify -CAfile "$d/ca/ca.crt" "$d/n1/node.crt"
check "node1's certificate names node1" \
  sh -c "openssl x509 -in '$d/n1/node.crt' -noout -subject | grep -q 'CN *= *node1'"
check_fails "keygen refuses to overwrite without --force" \
  "$BIN/csvctl" keygen --node node1 --ca-dir "$d/ca" --out "$d/n1"
check "keygen --force overwrites" "$BIN/csvctl" keygen --node node1 --ca-dir "$d/ca" --out "$d/n1" --force
check_fails "keygen rejects a bad node name" "$BIN/csvctl" keygen --node 'no spaces' --ca-dir "$d/ca" --out "$d/x"
"$BIN/csvctl" keygen --cluster other --ca-dir "$d/other" >/dev/null
check_fails "another cluster's CA does not verify node1" \
  openssl verify -CAfile "$d/other/ca.crt" "$d/n1/node.crt"
finish
