#!/bin/sh
# Build a small default machine (/var/lib/machines/demo, from busybox-static)
# and boot it with nspawnpy: busybox init runs a greeting, then powers off.
set -eu
root=${1:-/var/lib/machines/demo}
if [ ! -x "$root/bin/busybox" ]; then
    mkdir -p "$root"/bin "$root"/sbin "$root"/etc "$root"/proc "$root"/sys "$root"/dev \
        "$root"/run "$root"/tmp "$root"/root "$root"/var/tmp
    cp /bin/busybox "$root/bin/busybox"
    for applet in $("$root/bin/busybox" --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
    done
    ln -sf ../bin/busybox "$root/sbin/init"
    echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
    echo 'root:x:0:' > "$root/etc/group"
    printf 'ID=busybox\nNAME=BusyBox\nVERSION_ID=1\n' > "$root/etc/os-release"
    : > "$root/etc/machine-id"
    cat > "$root/etc/inittab" <<'TAB'
::sysinit:/bin/sh -c 'echo "Hello from $(hostname), PID $$ in its own namespaces."; uname -a'
::once:/bin/poweroff
::shutdown:/bin/true
TAB
fi
register=no
if [ -d /run/systemd/system ] && command -v machinectl >/dev/null; then register=yes; fi
exec nspawnpy --register=$register --boot -D "$root"
