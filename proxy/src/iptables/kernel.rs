//! The one seam between the iptables backend and the kernel: the `iptables`, `iptables-save`
//! and `iptables-restore` binaries of one flavour (nf_tables or legacy) behind the [`Iptables`]
//! trait, and a recording fake for unit tests.
//!
//! Which flavour: as upstream's iptables wrapper decides, the one the host already has rules in
//! (the kubelet's or an earlier kube-proxy's), nf_tables when neither has any.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::proxier::ProxyError;

/// The iptables binaries' flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    Nft,
    Legacy,
}

impl Flavour {
    pub fn name(self) -> &'static str {
        match self {
            Flavour::Nft => "nf_tables",
            Flavour::Legacy => "legacy",
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Flavour::Nft => "nft",
            Flavour::Legacy => "legacy",
        }
    }

    pub fn iptables(self) -> String {
        format!("iptables-{}", self.suffix())
    }
    pub fn save(self) -> String {
        format!("iptables-{}-save", self.suffix())
    }
    pub fn restore(self) -> String {
        format!("iptables-{}-restore", self.suffix())
    }

    /// Upstream's choice: the flavour with more rules installed; nf_tables on a tie.
    pub fn detect() -> Flavour {
        let count = |f: Flavour| {
            Command::new(f.save())
                .stderr(Stdio::null())
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .filter(|l| l.starts_with("-A"))
                        .count()
                })
                .unwrap_or(0)
        };
        let legacy = count(Flavour::Legacy);
        if legacy > 0 && legacy > count(Flavour::Nft) {
            Flavour::Legacy
        } else {
            Flavour::Nft
        }
    }
}

/// What the backend does to the kernel.
pub trait Iptables: Send {
    /// The flavour's name, for logs and metrics.
    fn flavour(&self) -> &'static str;
    /// `iptables-restore --noflush` of `data` (one atomic transaction).
    fn restore(&mut self, data: &str) -> Result<(), ProxyError>;
    /// `iptables-save -t table`.
    fn save(&mut self, table: &str) -> Result<String, ProxyError>;
    /// Whether a chain exists.
    fn chain_exists(&mut self, table: &str, chain: &str) -> bool;
    /// Flushes and deletes a chain if it exists.
    fn delete_chain(&mut self, table: &str, chain: &str) -> Result<(), ProxyError>;
    /// Deletes a rule if it exists.
    fn delete_rule(&mut self, table: &str, chain: &str, args: &[String]) -> Result<(), ProxyError>;
}

/// The real binaries.
#[derive(Debug, Clone)]
pub struct RealIptables {
    pub flavour: Flavour,
}

fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<std::process::Output, ProxyError> {
    let command = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| ProxyError::Exec {
        command: command.clone(),
        source,
    })?;
    if let Some(data) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(data.as_bytes())
            .map_err(|source| ProxyError::Exec {
                command: command.clone(),
                source,
            })?;
    }
    child
        .wait_with_output()
        .map_err(|source| ProxyError::Exec { command, source })
}

fn check(cmd: &mut Command, stdin: Option<&str>) -> Result<String, ProxyError> {
    let out = run(cmd, stdin)?;
    if !out.status.success() {
        return Err(ProxyError::Failed {
            command: format!("{:?}", cmd.get_program()),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Iptables for RealIptables {
    fn flavour(&self) -> &'static str {
        self.flavour.name()
    }

    fn restore(&mut self, data: &str) -> Result<(), ProxyError> {
        check(
            Command::new(self.flavour.restore()).args(["-w", "5", "--noflush"]),
            Some(data),
        )
        .map(drop)
    }

    fn save(&mut self, table: &str) -> Result<String, ProxyError> {
        check(Command::new(self.flavour.save()).args(["-t", table]), None)
    }

    fn chain_exists(&mut self, table: &str, chain: &str) -> bool {
        run(
            Command::new(self.flavour.iptables()).args(["-w", "5", "-t", table, "-S", chain, "1"]),
            None,
        )
        .is_ok_and(|o| o.status.success())
    }

    fn delete_chain(&mut self, table: &str, chain: &str) -> Result<(), ProxyError> {
        if !self.chain_exists(table, chain) {
            return Ok(());
        }
        check(
            Command::new(self.flavour.iptables()).args(["-w", "5", "-t", table, "-F", chain]),
            None,
        )?;
        check(
            Command::new(self.flavour.iptables()).args(["-w", "5", "-t", table, "-X", chain]),
            None,
        )
        .map(drop)
    }

    fn delete_rule(&mut self, table: &str, chain: &str, args: &[String]) -> Result<(), ProxyError> {
        let _ = run(
            Command::new(self.flavour.iptables())
                .args(["-w", "5", "-t", table, "-D", chain])
                .args(args),
            None,
        );
        Ok(())
    }
}

/// What the fake saw.
#[derive(Debug, Default)]
pub struct FakeState {
    /// Every restore input, in order.
    pub restores: Vec<String>,
    /// Chains per table.
    pub chains: BTreeMap<String, BTreeSet<String>>,
    /// Jump rules installed: (table, chain, args).
    pub rules: BTreeSet<(String, String, Vec<String>)>,
    /// Fail the next restore.
    pub fail_next_restore: bool,
}

/// A recording fake: restores are kept, chains tracked from the restore text.
#[derive(Debug, Default, Clone)]
pub struct FakeIptables {
    pub state: Arc<Mutex<FakeState>>,
}

impl Iptables for FakeIptables {
    fn flavour(&self) -> &'static str {
        "fake"
    }

    fn restore(&mut self, data: &str) -> Result<(), ProxyError> {
        let mut s = self.state.lock();
        if std::mem::take(&mut s.fail_next_restore) {
            return Err(ProxyError::Failed {
                command: "iptables-restore".into(),
                status: "exit status: 1".into(),
                stderr: "fake failure".into(),
            });
        }
        s.restores.push(data.to_string());
        let mut table = String::new();
        for line in data.lines() {
            if let Some(t) = line.strip_prefix('*') {
                table = t.to_string();
            } else if let Some(c) = line.strip_prefix(':') {
                let name = c.split_whitespace().next().unwrap_or_default().to_string();
                s.chains.entry(table.clone()).or_default().insert(name);
            } else if let Some(c) = line.strip_prefix("-X ") {
                s.chains.entry(table.clone()).or_default().remove(c.trim());
            } else if let Some(rule) = line.strip_prefix("-I ") {
                // Only jumps from the built-in chains are inserted; keep them as rules.
                let mut words = split_words(rule);
                let chain = words.remove(0);
                s.rules.insert((table.clone(), chain, words));
            }
        }
        Ok(())
    }

    fn save(&mut self, table: &str) -> Result<String, ProxyError> {
        let s = self.state.lock();
        let mut out = format!("*{table}\n");
        for c in s.chains.get(table).into_iter().flatten() {
            out.push_str(&format!(":{c} - [0:0]\n"));
        }
        for (_, chain, args) in s.rules.iter().filter(|(t, _, _)| t == table) {
            out.push_str(&format!("-A {chain}"));
            for a in args {
                if a.contains(' ') {
                    out.push_str(&format!(" \"{a}\""));
                } else {
                    out.push_str(&format!(" {a}"));
                }
            }
            out.push('\n');
        }
        out.push_str("COMMIT\n");
        Ok(out)
    }

    fn chain_exists(&mut self, table: &str, chain: &str) -> bool {
        self.state
            .lock()
            .chains
            .get(table)
            .is_some_and(|c| c.contains(chain))
    }

    fn delete_chain(&mut self, table: &str, chain: &str) -> Result<(), ProxyError> {
        if let Some(c) = self.state.lock().chains.get_mut(table) {
            c.remove(chain);
        }
        Ok(())
    }

    fn delete_rule(&mut self, table: &str, chain: &str, args: &[String]) -> Result<(), ProxyError> {
        self.state
            .lock()
            .rules
            .remove(&(table.into(), chain.into(), args.to_vec()));
        Ok(())
    }
}

/// Splits a restore line into words as the shell would for double-quoted words.
fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut started = false;
    for ch in line.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                started = true;
            }
            ' ' if !quoted => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            _ => {
                word.push(ch);
                started = true;
            }
        }
    }
    if started {
        words.push(word);
    }
    words
}
