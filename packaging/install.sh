#!/bin/sh
# Install nspawnpy on Debian 12, as root: build its Debian package and install
# it with apt, which brings in what it needs (pystemd, dbus-next, pyroute2,
# libseccomp2), plus busybox-static for the demo machine.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends busybox-static
deb=$(sh "$here/packaging/build-deb.sh" "$(mktemp -d)")
apt-get install -y -q --no-install-recommends "$deb"
echo "nspawnpy installed: $(/usr/bin/nspawnpy --version)"
