#!/bin/sh
# Build the Debian package nspawnpy_VERSION_all.deb (into $1, default ./build)
# with dpkg-deb: the package in the system Python, /usr/bin/nspawnpy and nspawnpyctl,
# units and networkd files, man pages, bash completions, the example .nspawn files, and
# the copyright file and changelog Debian policy asks for (lintian reports no errors).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
out=$(realpath -m "${1:-$here/build}")
version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$here/nspawnpy/__init__.py")
maintainer="nspawnpy maintainers <nspawnpy@example.invalid>"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

install -d "$stage/DEBIAN" "$stage/usr/bin" "$stage/usr/lib/python3/dist-packages" \
    "$stage/lib/systemd/system" "$stage/lib/systemd/network" "$stage/usr/share/man/man1" \
    "$stage/usr/share/bash-completion/completions" "$stage/usr/share/doc/nspawnpy/examples"
cp -r "$here/nspawnpy" "$stage/usr/lib/python3/dist-packages/"
find "$stage" -name __pycache__ -prune -exec rm -rf {} +
install -m 0755 "$here/packaging/nspawnpy" "$stage/usr/bin/nspawnpy"
install -m 0755 "$here/packaging/nspawnpyctl" "$stage/usr/bin/nspawnpyctl"
for unit in "$here"/units/*; do
    case "$unit" in
        *.network|*.netdev|*.link) install -m 0644 "$unit" "$stage/lib/systemd/network/" ;;
        *) install -m 0644 "$unit" "$stage/lib/systemd/system/" ;;
    esac
done
for command in nspawnpy nspawnpyctl; do
    gzip -9n < "$here/packaging/$command.1" > "$stage/usr/share/man/man1/$command.1.gz"
    install -m 0644 "$here/packaging/$command.bash" \
        "$stage/usr/share/bash-completion/completions/$command"
done
install -m 0644 "$here/packaging/copyright" "$stage/usr/share/doc/nspawnpy/copyright"
# A native package's changelog: one entry for the version being built.
when=$(date -R -u ${SOURCE_DATE_EPOCH:+-d @$SOURCE_DATE_EPOCH})
printf '%s\n' "nspawnpy ($version) unstable; urgency=medium" "" \
    "  * Release $version: nspawnpy and nspawnpyctl." "" \
    " -- $maintainer  $when" | gzip -9n > "$stage/usr/share/doc/nspawnpy/changelog.gz"
install -m 0644 "$here"/nspawn-files/*.nspawn "$stage/usr/share/doc/nspawnpy/examples/"
install -m 0644 "$here/README.md" "$stage/usr/share/doc/nspawnpy/"

cat > "$stage/DEBIAN/control" <<CONTROL
Package: nspawnpy
Version: $version
Architecture: all
Maintainer: $maintainer
Installed-Size: $(du -sk --exclude=DEBIAN "$stage" | cut -f1)
Depends: python3 (>= 3.11), python3-pystemd, python3-dbus-next, python3-pyroute2, libseccomp2
Recommends: systemd-container, busybox-static, libnftables1
Section: admin
Priority: optional
Description: systemd-nspawn compatible container manager in Python
 Runs a command or boots an OS tree in its own namespaces like systemd-nspawn,
 with the same options and .nspawn files, registers with systemd-machined and
 ships nspawnpy@.service. nspawnpyctl creates, lists, inspects, enters and stops
 machines, with or without machined.
CONTROL
cat > "$stage/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
py3compile -p nspawnpy 2>/dev/null || python3 -m compileall -q /usr/lib/python3/dist-packages/nspawnpy
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
POSTINST
cat > "$stage/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
find /usr/lib/python3/dist-packages/nspawnpy -name __pycache__ -prune -exec rm -rf {} + 2>/dev/null || true
PRERM
cat > "$stage/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
POSTRM
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm" "$stage/DEBIAN/postrm"
mkdir -p "$out"
dpkg-deb --root-owner-group --build "$stage" "$out/nspawnpy_${version}_all.deb" >/dev/null
echo "$out/nspawnpy_${version}_all.deb"
