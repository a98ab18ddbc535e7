#!/bin/sh
# Install what the tests need on Debian 12 (as root) and run the whole suite.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends \
    python3 python3-pytest python3-pystemd python3-dbus-next python3-pyroute2 libseccomp2 \
    busybox-static debootstrap debian-archive-keyring systemd-container zstd iproute2 \
    dnsmasq-base util-linux procps libnftables1 nftables lintian python3-pip python3-setuptools python3-wheel \
    e2fsprogs squashfs-tools erofs-utils dosfstools
cd "$here"
status=0
/usr/bin/python3 -m pytest -q -p no:cacheprovider tests "$@" || status=$?
# pytest's 5 means "no tests ran": that is a failure here.
[ "$status" -eq 5 ] && { echo "no tests were collected" >&2; exit 1; }
exit "$status"
