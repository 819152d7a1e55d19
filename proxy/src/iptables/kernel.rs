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
    flavour: Flavour,
    /// Per table, the most rules one restore has written: an estimate of what the kernel holds,
    /// for [`whole_table_cache`].
    table_rules: BTreeMap<String, usize>,
}

impl RealIptables {
    pub fn new(flavour: Flavour) -> RealIptables {
        RealIptables {
            flavour,
            table_rules: BTreeMap::new(),
        }
    }
}

/// iptables-nft (1.8.9 here) gathers the chain names a restore's commands name into a sorted
/// linked list before it reads the kernel (`nft_cache_level_set` → `cache_chain_list_insert`),
/// so a restore naming k chains costs about k² string compares: 54 s for a full restore of
/// 2,000 services × 10 endpoints on this machine, most of it in `strcmp`. A command that names
/// no chain makes it cache the whole table instead and skip the list; `-S` is the one such
/// command that changes nothing (it prints the table, which we discard). Reading the table
/// costs time linear in the rules the kernel holds, so the line goes in only where the names
/// are many compared with those rules: full syncs and rewrites of KUBE-SERVICES, not the
/// restores of one service's chains. Measured here: 64 ns × k² for the list, 10 µs per kernel
/// rule for the read, hence `k² > 156 × rules`. Only for the nf_tables binaries: the caller
/// decides.
pub fn whole_table_cache(data: &str, table_rules: &BTreeMap<String, usize>) -> String {
    let mut out = String::with_capacity(data.len() + 16);
    let mut pos = 0;
    for line in data.split_inclusive('\n') {
        out.push_str(line);
        pos += line.len();
        let Some(table) = line.strip_prefix('*') else {
            continue;
        };
        let body_len: usize = data[pos..]
            .split_inclusive('\n')
            .take_while(|l| l.trim_end() != "COMMIT")
            .map(str::len)
            .sum();
        let body = &data[pos..pos + body_len];
        let names = chain_names(body);
        let rules = table_rules.get(table.trim()).copied().unwrap_or(0);
        if names * names > 156 * rules {
            // With the whole table cached, iptables-nft no longer creates a built-in chain the
            // kernel lacks on first use (`-I INPUT …` fails with ENOENT in a fresh namespace);
            // declaring it with policy `-` creates it and leaves an existing one as it is.
            for chain in BUILTIN_CHAINS {
                let writes = |l: &str| {
                    l.strip_prefix("-A ")
                        .or_else(|| l.strip_prefix("-I "))
                        .is_some_and(|r| r.split(' ').next() == Some(chain))
                };
                if body.lines().any(writes) {
                    out.push_str(&format!(":{chain} - [0:0]\n"));
                }
            }
            out.push_str("-S\n");
        }
    }
    out
}

const BUILTIN_CHAINS: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

/// How many distinct chains a table section of a restore names: declared, appended to,
/// inserted into or jumped to.
fn chain_names(body: &str) -> usize {
    let mut names = BTreeSet::new();
    for line in body.lines() {
        if let Some(decl) = line.strip_prefix(':') {
            names.insert(decl.split(' ').next().unwrap_or(""));
            continue;
        }
        let mut words = line.split(' ');
        while let Some(word) = words.next() {
            if matches!(word, "-A" | "-I" | "-j") {
                names.insert(words.next().unwrap_or(""));
            }
        }
    }
    names.len()
}

/// Per table, how many rules a restore appends or inserts.
pub fn rules_per_table(data: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    let mut table = "";
    for line in data.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t.trim();
        } else if line.starts_with("-A ") || line.starts_with("-I ") {
            *counts.entry(table.to_string()).or_insert(0) += 1;
        }
    }
    counts
}

fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<std::process::Output, ProxyError> {
    run_to(cmd, stdin, Stdio::piped())
}

fn run_to(
    cmd: &mut Command,
    stdin: Option<&str>,
    stdout: Stdio,
) -> Result<std::process::Output, ProxyError> {
    let command = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(stdout)
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
    check_to(cmd, stdin, Stdio::piped())
}

fn check_to(cmd: &mut Command, stdin: Option<&str>, stdout: Stdio) -> Result<String, ProxyError> {
    let out = run_to(cmd, stdin, stdout)?;
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
        let mut cmd = Command::new(self.flavour.restore());
        cmd.args(["-w", "5", "--noflush"]);
        if self.flavour == Flavour::Nft {
            // `-S` prints the table: nothing we read.
            check_to(
                &mut cmd,
                Some(&whole_table_cache(data, &self.table_rules)),
                Stdio::null(),
            )?;
        } else {
            check(&mut cmd, Some(data))?;
        }
        for (table, rules) in rules_per_table(data) {
            let known = self.table_rules.entry(table).or_insert(0);
            *known = (*known).max(rules);
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn full_restore(services: usize) -> String {
        let mut text = String::from("*filter\n:KUBE-SERVICES - [0:0]\nCOMMIT\n*nat\n");
        for i in 0..services {
            text.push_str(&format!(":KUBE-SVC-{i}\n:KUBE-SEP-{i}\n"));
        }
        for i in 0..services {
            text.push_str(&format!("-A KUBE-SERVICES -d 10.0.0.{i} -j KUBE-SVC-{i}\n"));
            text.push_str(&format!("-A KUBE-SVC-{i} -j KUBE-SEP-{i}\n"));
            text.push_str(&format!(
                "-A KUBE-SEP-{i} -j DNAT --to-destination 10.1.0.{i}:80\n"
            ));
        }
        text + "COMMIT\n"
    }

    #[test]
    fn many_chain_names_get_a_whole_table_read_and_few_do_not() {
        let text = full_restore(1000);
        let names = chain_names(&text[text.find("*nat").unwrap()..]);
        assert_eq!(
            names,
            1000 * 2 + 2,
            "KUBE-SERVICES, KUBE-SVC-*, KUBE-SEP-*, DNAT"
        );
        // Nothing known about the kernel: the big nat section gets `-S`, and so does the tiny
        // filter one (one name, zero rules known), which costs nothing.
        let none = BTreeMap::new();
        let got = whole_table_cache(&text, &none);
        assert_eq!(got.lines().filter(|l| *l == "-S").count(), 2, "{got}");
        assert!(got.starts_with("*filter\n-S\n:KUBE-SERVICES"), "{got}");
        assert!(got.contains("COMMIT\n*nat\n-S\n:KUBE-SVC-0\n"), "{got}");
        assert_eq!(got.replace("-S\n", ""), text, "only the -S lines are added");

        // After that restore the kernel holds 3,000 nat rules; a full rewrite (2,002 names)
        // still pays for the read, one service's chains (3 names) do not.
        let known = rules_per_table(&text);
        assert_eq!(known.get("nat"), Some(&3000));
        assert_eq!(known.get("filter"), None);
        assert!(whole_table_cache(&text, &known).contains("*nat\n-S\n"));
        let one = "*nat\n:KUBE-SVC-7\n:KUBE-SEP-7\n-A KUBE-SVC-7 -j KUBE-SEP-7\n\
                   -A KUBE-SEP-7 -j DNAT --to-destination 10.1.0.7:80\nCOMMIT\n";
        assert_eq!(whole_table_cache(one, &known), one);
        // Built-in chains the section writes into are declared before `-S` (policy `-`: an
        // existing chain keeps its policy and rules), or iptables-nft would not create them.
        let jumps = "*nat\n:KUBE-SERVICES - [0:0]\n-I PREROUTING -j KUBE-SERVICES\n\
                     -I OUTPUT -j KUBE-SERVICES\nCOMMIT\n";
        assert_eq!(
            whole_table_cache(jumps, &Default::default()),
            "*nat\n:PREROUTING - [0:0]\n:OUTPUT - [0:0]\n-S\n:KUBE-SERVICES - [0:0]\n\
             -I PREROUTING -j KUBE-SERVICES\n-I OUTPUT -j KUBE-SERVICES\nCOMMIT\n"
        );
        // An empty section and text without tables pass through.
        assert_eq!(whole_table_cache("", &known), "");
        assert_eq!(
            whole_table_cache("*mangle\nCOMMIT\n", &known),
            "*mangle\nCOMMIT\n"
        );
    }
}
