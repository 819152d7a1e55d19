//! The pod's shared PID namespace without a pause container: the supervisor forks a tiny init
//! that is PID 1 of a new namespace and does nothing but reap, as the pause binary does
//! (kubernetes `build/pause/linux/pause.c`). Containers of the pod join it through
//! `/proc/<init>/ns/pid`.
//!
//! The namespace is made with `unshare(CLONE_NEWPID)` + `fork()`, after which the supervisor
//! points its `pid_for_children` back at its own namespace with `setns`, so later children
//! (libcontainer's processes) start where they would have otherwise.

use std::fs::File;
use std::io;

use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

/// Forks the namespace's init; returns its pid (as seen from the supervisor).
pub fn spawn_init() -> io::Result<Pid> {
    let own = File::open("/proc/self/ns/pid")?;
    unshare(CloneFlags::CLONE_NEWPID)?;
    match fork_child() {
        Ok(ForkResult::Child) => init_loop(),
        Ok(ForkResult::Parent { child }) => {
            setns(&own, CloneFlags::CLONE_NEWPID)?;
            Ok(child)
        }
        Err(e) => {
            setns(&own, CloneFlags::CLONE_NEWPID)?;
            Err(e.into())
        }
    }
}

#[allow(unsafe_code)]
fn fork_child() -> nix::Result<ForkResult> {
    // SAFETY: the supervisor is single-threaded (no async runtime, no threads), so the child
    // starts with a consistent heap and no locks held by vanished threads.
    unsafe { fork() }
}

/// PID 1 of the pod: dies with the supervisor, reaps whatever is reparented to it.
fn init_loop() -> ! {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let _ = nix::sys::prctl::set_name(c"capstan-pod-init");
    // SIGCHLD (with SIGTERM, SIGINT, SIGHUP) is blocked, inherited from the supervisor.
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    loop {
        loop {
            match waitpid(
                Pid::from_raw(-1),
                Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL),
            ) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = chld.wait();
    }
}
