//! What this host really has to offer, for the Node's capacity and system info.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::NodeSystemInfo;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Reading host facts failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `/proc/meminfo` could not be read or lacks `MemTotal`.
    #[error("failed to read MemTotal from /proc/meminfo")]
    Memory,
    /// statvfs on the state directory failed.
    #[error("failed to stat the filesystem of {0}: {1}")]
    Disk(String, #[source] nix::Error),
}

/// `MemTotal` in KiB.
fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

/// Capacity: CPUs this process may use, total memory, the state dir's filesystem, a pod limit.
pub fn capacity(state_dir: &Path, max_pods: u32) -> Result<BTreeMap<String, Quantity>, Error> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| mem_total_kib(&m))
        .ok_or(Error::Memory)?;
    let fs = nix::sys::statvfs::statvfs(state_dir)
        .map_err(|e| Error::Disk(state_dir.display().to_string(), e))?;
    let disk_kib = fs.blocks() as u64 * fs.fragment_size() as u64 / 1024;
    Ok(BTreeMap::from([
        ("cpu".into(), Quantity(cpus.to_string())),
        ("memory".into(), Quantity(format!("{memory}Ki"))),
        (
            "ephemeral-storage".into(),
            Quantity(format!("{disk_kib}Ki")),
        ),
        ("pods".into(), Quantity(max_pods.to_string())),
    ]))
}

/// Kubernetes' name for the CPU architecture.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn os_image(os_release: &str) -> Option<String> {
    let value = os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))?;
    Some(value.trim_matches('"').to_owned())
}

pub fn system_info(kubelet_version: &str) -> NodeSystemInfo {
    NodeSystemInfo {
        architecture: go_arch().into(),
        boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
        container_runtime_version: format!("node-agent://{}", env!("CARGO_PKG_VERSION")),
        kernel_version: read_trimmed("/proc/sys/kernel/osrelease"),
        kube_proxy_version: String::new(),
        kubelet_version: kubelet_version.into(),
        machine_id: read_trimmed("/etc/machine-id"),
        operating_system: "linux".into(),
        os_image: std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|s| os_image(&s))
            .unwrap_or_else(|| "Linux".into()),
        system_uuid: String::new(),
        ..NodeSystemInfo::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mem_total() {
        let meminfo = "MemTotal:       24523816 kB\nMemFree:        17000000 kB\n";
        assert_eq!(mem_total_kib(meminfo), Some(24523816));
        assert_eq!(mem_total_kib("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn reads_pretty_name() {
        let release = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(
            os_image(release).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
    }

    #[test]
    fn capacity_reports_all_resources() {
        let cap = capacity(Path::new("/"), 110).unwrap();
        assert_eq!(cap["pods"], Quantity("110".into()));
        assert!(cap["memory"].0.ends_with("Ki"));
        assert!(cap["cpu"].0.parse::<u32>().unwrap() >= 1);
    }
}
