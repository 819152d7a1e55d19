//! Memory-backed volumes on real tmpfs mounts (needs root; skipped with a message otherwise):
//! a memory emptyDir with its size limit and a secret volume are mounted, hold their files, and
//! are unmounted and removed at teardown. A guard unmounts whatever is left if an assertion
//! fails, so no mount outlives the test.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    EmptyDirVolumeSource, Pod, PodSpec, Secret, SecretVolumeSource, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kubelet::env::StaticObjects;
use kubelet::volume::mount::{HostMounter, Mounter};
use kubelet::volume::{VolumeManager, VolumeSources};

struct Guard(Vec<PathBuf>);

impl Drop for Guard {
    fn drop(&mut self) {
        for p in &self.0 {
            while HostMounter.is_mount_point(p).unwrap_or(false) {
                if HostMounter.unmount(p).is_err() {
                    break;
                }
            }
        }
    }
}

/// (size, fs type) of the mount at `path`, from /proc/self/mountinfo and statvfs.
fn mount_info(path: &std::path::Path) -> Option<(u64, String)> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let canon = fs::canonicalize(path).ok()?;
    let want = canon.to_str()?;
    let line = info.lines().rfind(|l| l.split(' ').nth(4) == Some(want))?;
    let fields: Vec<&str> = line.split(' ').collect();
    let sep = fields.iter().position(|f| *f == "-")?;
    let st = nix::sys::statvfs::statvfs(&canon).ok()?;
    Some((
        st.blocks() as u64 * st.fragment_size() as u64,
        fields[sep + 1].to_string(),
    ))
}

#[test]
fn memory_volumes_on_real_tmpfs() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (mounts tmpfs)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mgr = VolumeManager::new(tmp.path(), Arc::new(HostMounter));
    let mut objects = StaticObjects::default();
    objects.add_secret(Secret {
        metadata: ObjectMeta {
            namespace: Some("ns".into()),
            name: Some("tls".into()),
            ..Default::default()
        },
        data: Some([("key.pem".to_string(), ByteString(b"KEY".to_vec()))].into()),
        ..Default::default()
    });
    let alloc: BTreeMap<String, Quantity> = [("memory".to_string(), Quantity("1Gi".into()))].into();
    let sources = VolumeSources {
        lookup: &objects,
        node_allocatable: &alloc,
        tokens: None,
    };
    let volumes = vec![
        Volume {
            name: "cache".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                size_limit: Some(Quantity("16Mi".into())),
            }),
            ..Default::default()
        },
        Volume {
            name: "tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some("tls".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    let pod = Pod {
        metadata: ObjectMeta {
            namespace: Some("ns".into()),
            name: Some("p".into()),
            uid: Some("tmpfs-uid".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            volumes: Some(volumes),
            ..Default::default()
        }),
        status: None,
    };
    let cache_dir = mgr.volume_dir("tmpfs-uid", "kubernetes.io~empty-dir", "cache");
    let tls_dir = mgr.volume_dir("tmpfs-uid", "kubernetes.io~secret", "tls");
    let _guard = Guard(vec![cache_dir.clone(), tls_dir.clone()]);

    let mounted = mgr.setup_all(&pod, &sources).expect("setup");
    assert_eq!(mounted["cache"].host_path, cache_dir);
    let (size, fstype) = mount_info(&cache_dir).expect("cache is a mount point");
    assert_eq!(fstype, "tmpfs");
    assert_eq!(size, 16 << 20, "size=sizeLimit");
    let (size, fstype) = mount_info(&tls_dir).expect("secret volume is a mount point");
    assert_eq!(fstype, "tmpfs");
    assert_eq!(size, 1 << 30, "secret tmpfs sized to node allocatable");
    assert_eq!(fs::read_to_string(tls_dir.join("key.pem")).unwrap(), "KEY");
    fs::write(cache_dir.join("blob"), vec![0u8; 4096]).unwrap();
    // Set up again: still one mount each.
    mgr.setup_all(&pod, &sources).expect("second setup");
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let canon = fs::canonicalize(&cache_dir).unwrap();
    assert_eq!(
        info.lines()
            .filter(|l| l.split(' ').nth(4) == canon.to_str())
            .count(),
        1
    );

    mgr.teardown_pod("tmpfs-uid").expect("teardown");
    assert!(!HostMounter.is_mount_point(&cache_dir).unwrap());
    assert!(!HostMounter.is_mount_point(&tls_dir).unwrap());
    assert!(!mgr.pod_dir("tmpfs-uid").exists());
}
