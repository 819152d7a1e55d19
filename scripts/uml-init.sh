#!/bin/sh
# PID 1 of the User-Mode Linux guest started by scripts/uml-run.sh: mounts proc, sysfs and cgroup2,
# runs UML_WORKDIR/cmd, records its exit status in UML_WORKDIR/exit and powers off.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs tmpfs /dev/shm 2>/dev/null
status=0
sh "$UML_WORKDIR/cmd" > "$UML_WORKDIR/output" 2>&1 || status=$?
echo "$status" > "$UML_WORKDIR/exit.tmp"
mv "$UML_WORKDIR/exit.tmp" "$UML_WORKDIR/exit"
sync
echo o > /proc/sysrq-trigger
sleep 5
halt -f
