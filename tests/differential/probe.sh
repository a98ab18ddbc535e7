#!/bin/sh
# The differential probe: runs as the payload inside the container (busybox sh) and prints
# everything the payload can observe as raw sections ("@@ NAME" lines followed by data).  The
# harness (facts.py) turns the sections into facts and normalises what is random per run.
# With an argument, the report goes to that file instead of stdout (for consoles that show
# nothing, such as --console=passive).
#
# It only reads, or opens files for writing without writing to them (": >>FILE"), so a container
# that is not isolated as it should be cannot change the host through it.

[ -n "$1" ] && exec >"$1" 2>&1
me=$$
sec() { echo "@@ $1"; }

sec self
echo "pid_is_1 $([ "$me" = 1 ] && echo yes || echo no)"
echo "ppid_is_0 $(awk '/^PPid:/ {print ($2 == 0 ? "yes" : "no")}' /proc/$me/status)"
echo "cwd $(pwd)"
echo "umask $(umask)"
echo "id $(id)"
echo "personality $(cat /proc/$me/personality)"
echo "uname_m $(uname -m)"
echo "oom_score_adj $(cat /proc/$me/oom_score_adj)"
echo "hostname $(hostname)"
echo "domainname $(cat /proc/sys/kernel/domainname)"
# (not inside $(...), whose stdout is a pipe)
for n in 0 1 2; do
    if [ -t $n ]; then echo "isatty_$n yes"; else echo "isatty_$n no"; fi
done
echo "pid1_comm $(cat /proc/1/comm)"
echo "pid1_cmdline $(tr '\0' ' ' </proc/1/cmdline)"
echo "pid1_exe $(readlink /proc/1/exe)"
echo "pid1_environ $(tr '\0' '\n' </proc/1/environ | sort | tr '\n' ' ')"
echo "ionice $(ionice -p $me 2>&1)"
# session, process group and controlling tty (a pty's minor differs per run: major only)
awk -v me=$me '{ sub(/.*\) /, ""); print "stat_pgrp_is_self", ($3 == me ? "yes" : "no");
    print "stat_session_is_self", ($4 == me ? "yes" : "no");
    print "stat_ctty_major", int($5 / 256); print "stat_foreground", ($6 == $3 ? "yes" : "no") }' /proc/$me/stat
echo "boot_id $(cat /proc/sys/kernel/random/boot_id)"

sec setpriv
setpriv -d 2>&1

sec status
grep -E '^(Umask|Uid|Gid|Groups|Cap[A-Za-z]+|NoNewPrivs|Seccomp|Seccomp_filters|Cpus_allowed_list|Mems_allowed_list|Speculation_Store_Bypass|SpeculationIndirectBranch|CoreDumping|THP_enabled):' /proc/$me/status
# Signal masks as a program the payload starts inherits them (the shell's own change while it
# forks, and its handlers are its own).
grep -E '^(SigBlk|SigIgn):' /proc/self/status
echo "loginuid: $(cat /proc/$me/loginuid 2>&1)"
echo "sessionid: $(cat /proc/$me/sessionid 2>&1)"
echo "coredump_filter: $(cat /proc/$me/coredump_filter 2>&1)"
echo "timerslack_ns: $(cat /proc/$me/timerslack_ns 2>&1)"
echo "sched: $(head -1 /proc/$me/sched 2>&1 | sed 's/([0-9]*/(N/; s/#threads.*//')"
echo "nice: $(awk '{print $19}' /proc/$me/stat)"
echo "pid1_sig: $(grep -E '^Sig(Blk|Ign|Cgt)' /proc/1/status | tr -s '\t\n' '  ')"
echo "pid1_status: $(grep -E '^(Uid|Gid|CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/1/status | tr -s '\t\n' '  ')"

sec limits
cat /proc/$me/limits

sec environ
tr '\0' '\n' </proc/$me/environ | sort

sec fds
for f in /proc/$me/fd/*; do
    echo "${f##*/} $(readlink "$f")"
done

sec fdinfo_flags
for f in /proc/$me/fdinfo/*; do
    echo "${f##*/} $(awk '/^flags:/ {print $2}' "$f")"
done

sec ns
for f in /proc/$me/ns/*; do
    echo "${f##*/} $(readlink "$f")"
done

sec idmap
echo "uid_map $(cat /proc/$me/uid_map | tr -s ' ' | tr '\n' ';')"
echo "gid_map $(cat /proc/$me/gid_map | tr -s ' ' | tr '\n' ';')"
echo "setgroups $(cat /proc/$me/setgroups)"

sec cgroup
cat /proc/$me/cgroup

sec cgroup_writable
# Only the hierarchies' roots and our own cgroup: the rest of the host's tree (visible without a
# cgroup namespace) changes with whatever else runs on the machine.
{ find /sys/fs/cgroup -maxdepth 1 -type d 2>/dev/null
  while IFS=: read -r _ ctrl path; do
      ctrl=${ctrl#name=}
      d=/sys/fs/cgroup/${ctrl:-unified}$path
      [ -d "$d" ] || d=/sys/fs/cgroup$path
      echo "${d%/}"
  done </proc/$me/cgroup
} | sort -u | while read -r d; do
    [ -d "$d" ] && echo "$d $([ -w "$d" ] && echo rw || echo ro)"
done

sec mountinfo
cat /proc/$me/mountinfo

sec dev
find /dev 2>/dev/null | sort | while read -r p; do
    line=$(stat -c '%F|%t:%T|%u|%g|%a' "$p" 2>&1)
    [ -L "$p" ] && line="$line|-> $(readlink "$p")"
    echo "$p|$line"
done

sec runhost
find /run/host 2>/dev/null | sort | while read -r p; do
    line=$(stat -c '%F|%u|%g|%a' "$p" 2>&1)
    [ -L "$p" ] && line="$line|-> $(readlink "$p")"
    if [ -f "$p" ] && [ ! -L "$p" ]; then
        line="$line|sha256=$(sha256sum <"$p" 2>&1 | cut -c1-16)"
    fi
    echo "$p|$line"
done

sec runhost_text
for f in /run/host/container-manager /run/host/container-uuid; do
    [ -f "$f" ] && echo "$f $(cat "$f")"
done

sec etc
for f in /etc/resolv.conf /etc/localtime /etc/hostname /etc/machine-id /etc/hosts /etc/os-release; do
    line=$(stat -c '%F|%u|%g|%a' "$f" 2>&1)
    [ -L "$f" ] && line="$line|-> $(readlink "$f")"
    [ -e "$f" ] && line="$line|sha256=$(sha256sum <"$f" 2>&1 | cut -c1-16)"
    echo "$f|$line"
done
echo "/etc/machine-id.content|$(cat /etc/machine-id 2>&1)"

sec root
# The top of the tree as the payload sees it (what the tools created or hid there).
for p in / /etc /run /var /var/log /var/log/journal /tmp /var/tmp /root /home /usr /opt /srv /mnt; do
    [ -e "$p" ] || [ -L "$p" ] || continue
    echo "$p|$(stat -c '%F|%u|%g|%a' "$p" 2>&1)"
done
ls -A / /run /var/log /var/tmp /tmp 2>&1 | tr '\n' ' ' | sed 's/^/listing|/'
echo
for d in /sys /sys/fs /sys/kernel /sys/fs/cgroup /proc/sys; do
    echo "listing $d|$(ls -A "$d" 2>&1 | tr '\n' ' ')"
done
echo

sec writable
exec 3>&2 2>/dev/null  # the shell's own "Terminated" when a "hangs" open is killed
# Opening for writing without writing anything: EROFS/EACCES/EPERM tell how the file is exposed.
for f in /proc/sys/kernel/hostname /proc/sys/kernel/core_pattern /proc/sys/net/ipv4/ip_forward \
         /proc/sys/vm/drop_caches /proc/sysrq-trigger /proc/kmsg /proc/sys/kernel/random/boot_id \
         /sys/kernel/uevent_helper /sys/class/net/lo/mtu /sys/fs/cgroup/cgroup.procs \
         /sys/fs/cgroup/systemd/cgroup.procs /sys/fs/cgroup/unified/cgroup.procs \
         /sys/fs/cgroup/memory/cgroup.procs /run/host/os-release /etc/resolv.conf /etc/localtime; do
    # (a FIFO without a reader, such as an unserved /proc/kmsg, would block: "hangs")
    err=$(timeout 1 sh -c 'exec 2>&1; : >>"$1"' - "$f"); rc=$?
    [ $rc = 0 ] && err=ok
    [ $rc -gt 128 ] && err=hangs
    echo "$f ${err##*: }"
done
for d in / /etc /usr /var /tmp /run /sys /proc /dev /dev/shm /sys/fs/cgroup /run/host; do
    echo "access_w:$d $([ -w "$d" ] && echo yes || echo no)"
done

exec 2>&3 3>&-

sec syscalls
# Behaviour of a few calls that the capability set and the seccomp filter decide.
# (the label shows "self" for the probe's own PID, which differs with what ran before it)
try() { out=$("$@" 2>&1) && out="ok"; echo "$* => ${out##*: }" | sed "s/ -p $me / -p self /; s/ -p $me\$/ -p self/"; }
try rmmod probe_nonexistent_module
try swapoff /dev/null
try chroot / /bin/true
try mknod /dev/shm/probe-null c 1 3
try unshare -m sh -c 'mount -t tmpfs probe /dev/shm'
try unshare -u sh -c 'hostname probe-uts'
try unshare -n true
try unshare -U true
try unshare -p -f true
try nsenter -t 1 -m true
try renice -n -5 -p $me
try ionice -c 1 -p $me
try dmesg -r -s 1
try sysctl -n kernel.hostname
try kill -0 1

sec net
ip -o link 2>&1 | sed -e 's/^[0-9]*: //' -e 's/@if[0-9]*/@ifN/' -e 's/ qlen [0-9]*//'
ip -o addr 2>&1 | sed -e 's/^[0-9]*: //' -e 's/ valid_lft.*//' | grep -v ' inet6 fe80'
# (link-local routes and addresses carry MACs made per run for veth links)
ip route show table all 2>&1 | grep -v 'fe80::' | sed 's/^/route /'
ip -6 route show table all 2>&1 | grep -v 'fe80::' | sed 's/^/route6 /'

sec console
echo "dev_console $(stat -c '%F|%t:%T|%u|%g|%a' /dev/console 2>&1)"
echo "dev_console_link $(readlink /dev/console)"
for n in 0 1 2; do echo "fd$n $(readlink /proc/$me/fd/$n)"; done
echo "stty_stdin $(stty -g 2>/dev/null || echo not-a-tty)"
if (stty -g </dev/console >/dev/null) 2>/dev/null; then
    echo "console_is_tty yes"
else
    echo "console_is_tty no"
fi

sec end
