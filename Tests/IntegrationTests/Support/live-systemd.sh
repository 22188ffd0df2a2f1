#!/bin/sh
# Boots systemd as PID 1 of private PID, mount, UTS, IPC and cgroup namespaces, for tests that
# run units under a live systemd (LiveSystemd.swift starts it; it can be run by hand too).
#
#   live-systemd.sh ID            # boot; ID: a short name unique among the instances running at once
#   live-systemd.sh ID --cleanup  # once it is dead: remove the cgroups it was given
#
# What stays private, so that the machine and the other engineers' work are left as found:
# - /tmp, /var/tmp and /run are fresh tmpfs mounts, made before anything else and before
#   systemd starts. REQUIRED: systemd's boot-time tmpfiles run would otherwise empty the
#   machine's /tmp and /var/tmp (other sessions' work in progress). `set -e` stops the script,
#   before systemd is started, if any of these mounts fails. tmpfiles is masked besides.
# - /etc, /usr, /var/lib, /var/log and /var/cache are overlays whose upper layers live in the
#   private /run: units, users, packages and logs written inside vanish with the instance.
# - The cgroups: systemd gets a cgroup namespace rooted at cgroups made for this ID, so two
#   instances (two test runs at once) never see or kill each other's units; the host's
#   hierarchies are remounted inside with that root. LiveSystemd removes those cgroups after.
# - Units that would touch what namespaces do not cover (sysctl, kernel modules, binfmt,
#   /dev nodes, the /dev/log symlink) or that nothing here needs (timers: apt, e2scrub, man-db)
#   are masked, and generators are off (fstab, gpt-auto): none of them is needed to run a service.
# - The network is the host's: tests reach the units' sockets on 127.0.0.1.
set -eu

id=${1:?usage: live-systemd.sh ID}

if [ "${2-}" = --cleanup ]; then
    # Depth first: a cgroup can only be removed once its children are.
    find /sys/fs/cgroup -depth -type d -path "*/live-systemd-$id*" -exec rmdir {} +
    exit 0
fi

# Our own cgroups, below the ones we are in (never above them: the machine's own limits keep
# applying), for systemd's cgroup namespace.
own_cgroups() {
    if [ "$(stat -f -c %T /sys/fs/cgroup)" = cgroup2fs ]; then
        # The unified hierarchy alone: one cgroup.
        path=$(sed -n 's/^0:://p' /proc/self/cgroup)
        mkdir -p "/sys/fs/cgroup${path%/}/live-systemd-$id"
        echo $$ >"/sys/fs/cgroup${path%/}/live-systemd-$id/cgroup.procs"
        return
    fi
    while IFS=: read -r _ controllers path; do
        case $controllers in
            "") hierarchy=unified ;;
            name=systemd) hierarchy=systemd ;;
            name=*) continue ;;
            *) hierarchy=$controllers ;;
        esac
        cgroup=/sys/fs/cgroup/$hierarchy${path%/}/live-systemd-$id
        [ -d "/sys/fs/cgroup/$hierarchy" ] || continue
        mkdir -p "$cgroup"
        # A new v1 cpuset has no CPUs and no memory nodes, and takes no process until given some.
        if [ "$hierarchy" = cpuset ]; then
            cat "${cgroup%/*}/cpuset.cpus" >"$cgroup/cpuset.cpus"
            cat "${cgroup%/*}/cpuset.mems" >"$cgroup/cpuset.mems"
        fi
        echo $$ >"$cgroup/cgroup.procs"
    done </proc/self/cgroup
}

if [ "${2-}" != --inside ]; then
    # Outside: our own cgroups, then the namespaces. --kill-child: when unshare dies, systemd
    # (its child) is SIGKILLed, and with it the whole PID namespace.
    own_cgroups
    exec unshare --pid --fork --mount --uts --ipc --cgroup --propagation private --mount-proc --kill-child \
        "$0" "$id" --inside
fi

# Inside, as PID 1 of the new PID namespace (until exec below).
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=1777 tmpfs /var/tmp
mount -t tmpfs -o mode=0755 tmpfs /run
for dir in /tmp /var/tmp /run; do
    # A second check that cannot be skipped: each must now be a tmpfs of this namespace.
    [ "$(stat -f -c %T "$dir")" = tmpfs ] || { echo "live-systemd: $dir is not a private tmpfs" >&2; exit 1; }
done

for dir in /etc /usr /var/lib /var/log /var/cache; do
    layer=/run/live-systemd/overlay$(echo "$dir" | tr / _)
    mkdir -p "$layer/upper" "$layer/work"
    mount -t overlay overlay -o "lowerdir=$dir,upperdir=$layer/upper,workdir=$layer/work" "$dir"
done

# The cgroup hierarchies as this cgroup namespace sees them (rooted at live-systemd-$id).
if [ "$(stat -f -c %T /sys/fs/cgroup)" = cgroup2fs ]; then
    mount -t cgroup2 cgroup2 /sys/fs/cgroup
else
    mount -t tmpfs -o mode=0755 tmpfs /sys/fs/cgroup
    for hierarchy in cpu cpuacct cpuset memory devices freezer blkio pids; do
        grep -qw "$hierarchy" /proc/cgroups || continue
        mkdir /sys/fs/cgroup/$hierarchy
        mount -t cgroup -o "$hierarchy" cgroup /sys/fs/cgroup/$hierarchy
    done
    mkdir /sys/fs/cgroup/systemd /sys/fs/cgroup/unified
    mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
    mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified
fi

mkdir -p /etc/systemd/system /etc/systemd/system-generators
for unit in systemd-tmpfiles-setup.service systemd-tmpfiles-setup-dev.service systemd-tmpfiles-clean.timer \
    systemd-sysctl.service systemd-modules-load.service kmod-static-nodes.service systemd-binfmt.service \
    proc-sys-fs-binfmt_misc.automount systemd-sysusers.service systemd-firstboot.service systemd-repart.service \
    systemd-machine-id-commit.service systemd-random-seed.service systemd-udevd.service \
    systemd-udev-trigger.service systemd-journald-dev-log.socket systemd-journald-audit.socket \
    dev-hugepages.mount dev-mqueue.mount sys-kernel-config.mount sys-kernel-debug.mount \
    sys-kernel-tracing.mount sys-fs-fuse-connections.mount systemd-pcrphase.service \
    systemd-pcrphase-sysinit.service getty.target console-getty.service timers.target; do
    ln -sf /dev/null "/etc/systemd/system/$unit"
done
for generator in /lib/systemd/system-generators/*; do
    ln -sf /dev/null "/etc/systemd/system-generators/${generator##*/}"
done

# container=: systemd then leaves the clock, the hostname and the console alone.
export container=gatewayd-live-systemd
# Its own messages (a unit's watchdog timeout, failed jobs) go to the private journal, never
# to the kernel log (kmsg): that one is the machine's.
exec /lib/systemd/systemd --system --unit=basic.target --log-target=journal --show-status=no
