#!/bin/sh
# Install nspawnpy and what it needs on Debian 12, as root:
#   the package into the system Python, /usr/bin/nspawnpy, the units and
#   networkd files, the man page and shell completion.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends \
    python3 python3-pystemd python3-dbus-next python3-pyroute2 libseccomp2 busybox-static

site=/usr/lib/python3/dist-packages
rm -rf "$site/nspawnpy"
cp -r "$here/nspawnpy" "$site/nspawnpy"
find "$site/nspawnpy" -name __pycache__ -prune -exec rm -rf {} +
env -u PYTHONDONTWRITEBYTECODE /usr/bin/python3 -m compileall -q "$site/nspawnpy"

install -m 0755 "$here/packaging/nspawnpy" /usr/bin/nspawnpy
install -d /usr/lib/systemd/system /usr/lib/systemd/network /usr/share/man/man1 \
    /usr/share/bash-completion/completions /usr/share/doc/nspawnpy/examples
for unit in "$here"/units/*; do
    case "$unit" in
        *.network|*.netdev|*.link) install -m 0644 "$unit" /usr/lib/systemd/network/ ;;
        *) install -m 0644 "$unit" /usr/lib/systemd/system/ ;;
    esac
done
[ -f "$here/packaging/nspawnpy.1" ] && install -m 0644 "$here/packaging/nspawnpy.1" /usr/share/man/man1/
[ -f "$here/packaging/nspawnpy.bash" ] && \
    install -m 0644 "$here/packaging/nspawnpy.bash" /usr/share/bash-completion/completions/nspawnpy
cp "$here"/nspawn-files/*.nspawn /usr/share/doc/nspawnpy/examples/ 2>/dev/null || true
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi
echo "nspawnpy installed: $(/usr/bin/nspawnpy --version)"
