//! What the Node reports about the machine: processors, memory, the root dir's filesystem size,
//! huge pages, and the identity fields of `nodeInfo` (machine ID, system UUID, boot ID, kernel,
//! OS image, architecture). Upstream reads these through cAdvisor; we read the same kernel files
//! directly (`/proc/cpuinfo`, `/proc/meminfo`, `statvfs`, `/sys/kernel/mm/hugepages`,
//! `/etc/machine-id`, `/sys/class/dmi/id/product_uuid`, `/proc/sys/kernel/random/boot_id`,
//! `/etc/os-release`). Parsing is split from reading so the parsers are unit-tested on text.

use std::net::IpAddr;
use std::path::Path;

/// Facts about this machine, gathered once at start-up (the boot ID and capacity do not change
/// while the kubelet runs).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MachineInfo {
    pub num_cpus: u32,
    pub memory_bytes: u64,
    /// Size of the filesystem holding the root dir.
    pub ephemeral_storage_bytes: u64,
    /// Huge pages per size: (`hugepages-2Mi`, bytes).
    pub hugepages: Vec<(String, u64)>,
    pub machine_id: String,
    pub system_uuid: String,
    pub boot_id: String,
    pub kernel_version: String,
    pub os_image: String,
    /// Go's name for the architecture (`amd64`, `arm64`).
    pub architecture: String,
    /// Always `linux`.
    pub operating_system: String,
}

impl MachineInfo {
    /// Reads this machine. Missing identity files give empty strings (a container or a VM without
    /// DMI has no product UUID), as upstream does.
    pub fn gather(root_dir: &Path) -> MachineInfo {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let num_cpus = match count_processors(&read("/proc/cpuinfo")) {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            n => n,
        };
        let ephemeral_storage_bytes = nix::sys::statvfs::statvfs(root_dir)
            .map(|s| s.blocks() * s.fragment_size())
            .unwrap_or(0);
        MachineInfo {
            num_cpus,
            memory_bytes: parse_mem_total(&read("/proc/meminfo")).unwrap_or(0),
            ephemeral_storage_bytes,
            hugepages: read_hugepages(Path::new("/sys/kernel/mm/hugepages")),
            machine_id: read("/etc/machine-id").trim().to_string(),
            system_uuid: read("/sys/class/dmi/id/product_uuid").trim().to_string(),
            boot_id: read("/proc/sys/kernel/random/boot_id").trim().to_string(),
            kernel_version: read("/proc/sys/kernel/osrelease").trim().to_string(),
            os_image: parse_os_release_pretty(&read("/etc/os-release"))
                .unwrap_or_else(|| "Linux".into()),
            architecture: go_arch(std::env::consts::ARCH).to_string(),
            operating_system: "linux".into(),
        }
    }
}

/// The number of `processor` entries in `/proc/cpuinfo`.
pub fn count_processors(cpuinfo: &str) -> u32 {
    cpuinfo
        .lines()
        .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
        .count() as u32
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
pub fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut parts = line["MemTotal:".len()..].split_whitespace();
    let v: u64 = parts.next()?.parse().ok()?;
    Some(match parts.next() {
        Some("kB") => v * 1024,
        _ => v,
    })
}

/// `PRETTY_NAME` from `/etc/os-release`, unquoted.
pub fn parse_os_release_pretty(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("PRETTY_NAME="))?;
    let v = line["PRETTY_NAME=".len()..].trim();
    let v = v
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(v);
    Some(v.to_string())
}

/// Rust's architecture name in Go's spelling (`GOARCH`), which Kubernetes uses.
pub fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// Huge page pools: `hugepages-<n>kB/nr_hugepages` → (`hugepages-2Mi`, total bytes).
fn read_hugepages(dir: &Path) -> Vec<(String, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, u64)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let kb: u64 = name
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            let count: u64 = std::fs::read_to_string(e.path().join("nr_hugepages"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Some((hugepage_resource_name(kb * 1024), count * kb * 1024))
        })
        .collect();
    out.sort();
    out
}

/// `hugepages-2Mi`, `hugepages-1Gi`: the resource name for a page size, as upstream writes it.
pub fn hugepage_resource_name(page_bytes: u64) -> String {
    let units = [("Gi", 1u64 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)];
    for (suffix, size) in units {
        if page_bytes >= size && page_bytes.is_multiple_of(size) {
            return format!("hugepages-{}{suffix}", page_bytes / size);
        }
    }
    format!("hugepages-{page_bytes}")
}

/// The host's primary address: the source address of the default route. Connecting a UDP socket
/// only asks the kernel for a route; nothing is sent. Falls back to IPv6, then loopback.
pub fn primary_address() -> IpAddr {
    let probe = |bind: &str, target: &str| {
        std::net::UdpSocket::bind(bind)
            .and_then(|s| s.connect(target).map(|_| s))
            .and_then(|s| s.local_addr())
            .map(|a| a.ip())
            .ok()
    };
    probe("0.0.0.0:0", "192.0.2.1:9")
        .or_else(|| probe("[::]:0", "[2001:db8::1]:9"))
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers() {
        let cpuinfo = "processor\t: 0\nmodel name\t: X\n\nprocessor\t: 1\nmodel name\t: X\n";
        assert_eq!(count_processors(cpuinfo), 2);
        let meminfo = "MemTotal:       16318112 kB\nMemFree:          123 kB\n";
        assert_eq!(parse_mem_total(meminfo), Some(16318112 * 1024));
        let osr = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\n";
        assert_eq!(
            parse_os_release_pretty(osr).as_deref(),
            Some("Debian GNU/Linux 13 (trixie)")
        );
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
        assert_eq!(hugepage_resource_name(2 << 20), "hugepages-2Mi");
        assert_eq!(hugepage_resource_name(1 << 30), "hugepages-1Gi");
    }

    #[test]
    fn gathers_this_machine() {
        let m = MachineInfo::gather(Path::new("/"));
        assert!(m.num_cpus >= 1);
        assert!(m.memory_bytes > 0);
        assert!(m.ephemeral_storage_bytes > 0);
        assert!(!m.kernel_version.is_empty());
        assert_eq!(m.operating_system, "linux");
    }
}
