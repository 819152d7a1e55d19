//! The per-pod supervisor: a single-threaded process that creates, starts, execs and reaps the pod's containers through libcontainer and writes their logs (`capstan supervise`).

/// Entry point of `capstan supervise …`; never returns.
pub fn main() -> ! {
    eprintln!("capstan supervise: not built yet");
    std::process::exit(2)
}
