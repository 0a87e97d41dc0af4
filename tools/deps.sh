#!/usr/bin/env bash
# Install every Debian 12 package csvfs and its tests use. Idempotent: when all
# are present it says so and touches nothing; otherwise apt-get update + install.
set -euo pipefail
PACKAGES=(
  build-essential pkg-config clang libclang-rt-14-dev make
  libfuse3-dev fuse3
  libext2fs-dev comerr-dev e2fsprogs fuse2fs
  libblkid-dev uuid-dev util-linux
  corosync libcorosync-common-dev libcpg-dev libquorum-dev libvotequorum-dev libcmap-dev
  libdlm-dev
  libssl-dev openssl
  liburing-dev
  libcmocka-dev
  qemu-utils fio
  iproute2 attr acl psmisc procps kmod python3
  xfsprogs
  resource-agents libxml2-utils groff-base systemd
  pacemaker pacemaker-cli-utils
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "deps: missing packages: ${missing[*]}; run 'make deps' as root" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${PACKAGES[@]}"
# corosync's and pacemaker's packages enable system services; the lab runs its own
# per namespace (tests/integration/install.sh runs pacemakerd in the lab's nodes).
