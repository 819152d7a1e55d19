//! The CRI conformance suite's machinery: every case is written once against the CRI v1 gRPC
//! clients (`harness::Ctx`) and run once per runtime — Capstan's built-in runtime (`capstan cri`)
//! and Debian's containerd with runc as the reference — as trials named `<runtime>::<case>`.
//!
//! Cases share one runtime instance per runtime (started on first use, stopped after the last
//! case) and run concurrently on it under a read lock; cases that check the node is left clean
//! take the write lock, so that no other case's pods are coming or going meanwhile; cases that
//! need a runtime configured differently, or that kill it, get an instance of their own.
//! Upstream's critest (cri-tools `pkg/validate`) is the coverage this mirrors; the cases are ours.

pub mod cases;
pub mod harness;
pub mod instance;

use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::future::BoxFuture;
use futures::FutureExt;
use harness::{Ctx, Verdict};
use instance::{Instance, Kind, Network};

/// How long one case may take before it is failed (its pods are still cleaned up).
const CASE_TIMEOUT: Duration = Duration::from_secs(150);

/// How a case uses a runtime instance.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// The runtime's shared instance, concurrently with other cases.
    Shared,
    /// The shared instance, with no other case running on it (node-leftover checks).
    Exclusive,
    /// An instance of its own, with this network, stopped after the case.
    Own(Network),
}

pub type CaseFn = fn(Ctx) -> BoxFuture<'static, Result<Verdict>>;

pub struct Case {
    pub name: &'static str,
    pub mode: Mode,
    pub run: CaseFn,
}

/// `case!(module::fn_name)` or `case!(module::fn_name, Mode::…)`: a `Case` named `fn_name` for an
/// `async fn(Ctx) -> Result<Verdict>`.
#[macro_export]
macro_rules! case {
    ($m:ident :: $f:ident) => {
        $crate::case!($m::$f, $crate::cri::Mode::Shared)
    };
    ($m:ident :: $f:ident, $mode:expr) => {
        $crate::cri::Case {
            name: stringify!($f),
            mode: $mode,
            run: |c| Box::pin($crate::cri::cases::$m::$f(c)),
        }
    };
}

/// The tokio runtime every trial's `block_on` shares (so do the gRPC channels).
pub static TOKIO: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("building the tokio runtime")
});

struct Shared {
    inst: Arc<Instance>,
}

/// Shared cases hold it for reading; exclusive cases and cases with an instance of their own
/// hold it for writing, so that node-wide before/after comparisons (network namespaces live in
/// one host-wide directory) see only their own doing.
static NODE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

static CAPSTAN: tokio::sync::OnceCell<Result<Arc<Shared>, String>> =
    tokio::sync::OnceCell::const_new();
static CONTAINERD: tokio::sync::OnceCell<Result<Arc<Shared>, String>> =
    tokio::sync::OnceCell::const_new();

fn cell(kind: Kind) -> &'static tokio::sync::OnceCell<Result<Arc<Shared>, String>> {
    match kind {
        Kind::Capstan => &CAPSTAN,
        Kind::Containerd => &CONTAINERD,
    }
}

async fn shared(kind: Kind) -> Result<Arc<Shared>, String> {
    cell(kind)
        .get_or_init(|| async move {
            Instance::start(kind, Network::Bridge)
                .await
                .map(|inst| {
                    Arc::new(Shared {
                        inst: Arc::new(inst),
                    })
                })
                .map_err(|e| format!("{e:#}"))
        })
        .await
        .clone()
}

/// Stops the shared instances that were started (after the last trial).
pub fn stop_shared() {
    for kind in [Kind::Capstan, Kind::Containerd] {
        if let Some(Ok(s)) = cell(kind).get() {
            TOKIO.block_on(s.inst.stop());
        }
    }
}

/// One result line for `scripts/cri-conformance-report.sh`, appended to the file named by
/// $CRI_CONFORMANCE_RESULTS: `runtime<TAB>case<TAB>pass|fail|n.a.<TAB>seconds<TAB>reason`.
fn record(kind: Kind, case: &str, result: &str, reason: &str, secs: f64) {
    static FILE: Mutex<()> = Mutex::new(());
    let Ok(path) = std::env::var("CRI_CONFORMANCE_RESULTS") else {
        return;
    };
    let _g = FILE.lock().unwrap_or_else(|e| e.into_inner());
    let reason = reason.replace(['\t', '\n', '\r'], " ");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{}\t{case}\t{result}\t{secs:.1}\t{reason}", kind.name());
    }
}

/// Runs one case on one runtime: picks the instance, runs the case under its lock and a timeout,
/// cleans up the case's pods, records the result.
pub fn run_trial(kind: Kind, case: &'static Case) -> Result<(), libtest_mimic::Failed> {
    let started = Instant::now();
    let outcome: Result<Verdict, String> = TOKIO.block_on(async {
        let (_read, _write) = match case.mode {
            Mode::Shared => (Some(NODE.read().await), None),
            Mode::Exclusive | Mode::Own(_) => (None, Some(NODE.write().await)),
        };
        let inst = match case.mode {
            Mode::Own(net) => match Instance::start(kind, net).await {
                Ok(i) => Arc::new(i),
                Err(e) => return Err(format!("starting {}: {e:#}", kind.name())),
            },
            Mode::Shared | Mode::Exclusive => match shared(kind).await {
                Ok(s) => s.inst.clone(),
                Err(e) => return Err(format!("the shared {} instance: {e}", kind.name())),
            },
        };
        let ctx = Ctx::new(inst.clone(), case.name);
        let res = tokio::time::timeout(
            CASE_TIMEOUT,
            AssertUnwindSafe((case.run)(ctx.clone())).catch_unwind(),
        )
        .await;
        let cleanup = tokio::time::timeout(Duration::from_secs(60), ctx.cleanup()).await;
        if matches!(case.mode, Mode::Own(_)) {
            inst.stop().await;
        }
        let mut out = match res {
            Err(_) => Err(format!("timed out after {CASE_TIMEOUT:?}")),
            Ok(Err(panic)) => Err(panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".into())),
            Ok(Ok(Err(e))) => Err(format!("{e:#}")),
            Ok(Ok(Ok(v))) => Ok(v),
        };
        match cleanup {
            Ok(Ok(())) => {}
            Ok(Err(e)) if out.is_ok() => out = Err(format!("{e:#}")),
            Err(_) if out.is_ok() => out = Err("cleaning up the case's pods timed out".into()),
            _ => {}
        }
        let notes = ctx.notes();
        match out {
            Ok(Verdict::Pass) if !notes.is_empty() => {
                println!(
                    "note ({}::{}): {}",
                    kind.name(),
                    case.name,
                    notes.join("; ")
                );
                Ok(Verdict::Pass)
            }
            other => other,
        }
        .map(|v| (v, notes))
        .map(|(v, notes)| {
            if let Verdict::Pass = v {
                record(
                    kind,
                    case.name,
                    "pass",
                    &notes.join("; "),
                    started.elapsed().as_secs_f64(),
                );
            }
            v
        })
    });
    let secs = started.elapsed().as_secs_f64();
    match outcome {
        Ok(Verdict::Pass) => Ok(()),
        Ok(Verdict::NotApplicable(why)) => {
            println!("n.a. ({}::{}): {why}", kind.name(), case.name);
            record(kind, case.name, "n.a.", &why, secs);
            Ok(())
        }
        Err(msg) => {
            record(kind, case.name, "fail", &msg, secs);
            Err(msg.into())
        }
    }
}
