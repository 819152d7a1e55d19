#!/bin/sh
# Boots a User-Mode Linux guest (Debian's `user-mode-linux`, a cgroup-v2 capable 6.1 kernel) with
# the host's / as its root (hostfs) and runs one command in it, as root, with proc, sysfs and a
# cgroup2 hierarchy at /sys/fs/cgroup mounted by scripts/uml-init.sh. The command's output goes to
# WORKDIR/output and its exit status to WORKDIR/exit; the guest powers off afterwards.
#
#   scripts/uml-run.sh WORKDIR COMMAND [ARG...]
#
# Mounts made inside the guest belong to the guest kernel and never touch the host; files written
# through hostfs do land on the host (only WORKDIR is written by this harness).
#
# Hosts with large XSAVE state (AMX, e.g. Sapphire Rapids) make UML 6.1's ptrace(PTRACE_SETREGSET,
# NT_X86_XSTATE) fail with EFAULT ("ptrace set fp regs failed, errno = 14", init is killed). The
# caller must then run this script under a seccomp filter that fails ptrace(PTRACE_GETREGSET,
# NT_X86_XSTATE) so UML falls back to PTRACE_GETFPREGS; cri/tests/sandbox_cgroups.rs does that.
set -eu
[ $# -ge 2 ] || { echo "usage: $0 WORKDIR COMMAND [ARG...]" >&2; exit 2; }
workdir=$(cd "$1" && pwd)
shift
here=$(cd "$(dirname "$0")" && pwd)
uml=${UML_KERNEL:-linux.uml}
command -v "$uml" >/dev/null || { echo "$uml not found (apt install user-mode-linux)" >&2; exit 3; }

# The command, quoted for sh, run by the guest's init.
: > "$workdir/cmd"
for arg in "$@"; do
    printf "'%s' " "$(printf '%s' "$arg" | sed "s/'/'\\\\''/g")" >> "$workdir/cmd"
done
echo >> "$workdir/cmd"
rm -f "$workdir/exit" "$workdir/output"

# UML keeps its memory in a file under TMPDIR and its control socket under ~/.uml: keep both in
# WORKDIR so nothing is left behind.
mkdir -p "$workdir/uml-tmp"
export TMPDIR="$workdir/uml-tmp"
# Unknown key=value kernel parameters become init's environment.
exec "$uml" mem="${UML_MEM:-512M}" rootfstype=hostfs rootflags=/ rw \
    init="$here/uml-init.sh" UML_WORKDIR="$workdir" \
    umid="capstan-$$" uml_dir="$workdir/uml-tmp" \
    con=null con0=fd:0,fd:1 < /dev/null > "$workdir/console" 2>&1
