//! The volume plugins on a temporary kubelet root with a recording mounter (no root needed):
//! layout, modes, payloads, hostPath type checks, claims, sub-paths, refresh and teardown.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapProjection, ConfigMapVolumeSource, Container, DownwardAPIProjection,
    DownwardAPIVolumeFile, DownwardAPIVolumeSource, EmptyDirVolumeSource, HostPathVolumeSource,
    KeyToPath, LocalVolumeSource, ObjectFieldSelector, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimStatus, PersistentVolumeClaimVolumeSource,
    PersistentVolumeSpec, Pod, PodSpec, ProjectedVolumeSource, ResourceFieldSelector,
    ResourceRequirements, Secret, SecretProjection, SecretVolumeSource,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kubelet::env::StaticObjects;
use kubelet::volume::mount::FakeMounter;
use kubelet::volume::{
    TokenRequest, VolumeError, VolumeKind, VolumeManager, VolumeSources, CONFIG_MAP_PLUGIN,
};

const UID: &str = "0f1e2d3c-uid";

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    mounter: Arc<FakeMounter>,
    mgr: VolumeManager,
    objects: StaticObjects,
    alloc: BTreeMap<String, Quantity>,
}

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(ns.into()),
        name: Some(name.into()),
        ..Default::default()
    }
}

fn setup_env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("kubelet");
    let mounter = Arc::new(FakeMounter::default());
    let mgr = VolumeManager::new(&root, mounter.clone());
    let mut objects = StaticObjects::default();
    objects.add_config_map(ConfigMap {
        metadata: meta("ns1", "cfg"),
        data: Some(
            [
                ("app.conf".to_string(), "a=1\n".to_string()),
                ("other".to_string(), "x".to_string()),
            ]
            .into(),
        ),
        binary_data: Some([("bin".to_string(), ByteString(vec![0, 1, 2]))].into()),
        ..Default::default()
    });
    objects.add_secret(Secret {
        metadata: meta("ns1", "creds"),
        data: Some([("password".to_string(), ByteString(b"s3cr3t".to_vec()))].into()),
        ..Default::default()
    });
    let alloc = [
        ("cpu".to_string(), Quantity("4".into())),
        ("memory".to_string(), Quantity("8Gi".into())),
    ]
    .into();
    Env {
        _tmp: tmp,
        root,
        mounter,
        mgr,
        objects,
        alloc,
    }
}

impl Env {
    fn sources(&self) -> VolumeSources<'_> {
        VolumeSources {
            lookup: &self.objects,
            node_allocatable: &self.alloc,
            tokens: None,
        }
    }
    fn log(&self) -> Vec<String> {
        self.mounter.log.lock().unwrap().clone()
    }
}

fn pod(volumes: Vec<Volume>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            uid: Some(UID.into()),
            labels: Some([("app".to_string(), "web".to_string())].into()),
            ..meta("ns1", "web-0")
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                resources: Some(ResourceRequirements {
                    limits: Some([("memory".to_string(), Quantity("256Mi".into()))].into()),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            volumes: Some(volumes),
            ..Default::default()
        }),
        status: None,
    }
}

fn vol(name: &str) -> Volume {
    Volume {
        name: name.into(),
        ..Default::default()
    }
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn empty_dir_on_disk_and_in_memory() {
    let e = setup_env();
    let disk = Volume {
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..vol("scratch")
    };
    let mem = Volume {
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: Some(Quantity("64Mi".into())),
        }),
        ..vol("cache")
    };
    let mem_unbounded = Volume {
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: Some(Quantity("1Gi".into())),
        }),
        ..vol("big")
    };
    let p = pod(vec![disk.clone(), mem.clone(), mem_unbounded]);
    let all = e.mgr.setup_all(&p, &e.sources()).unwrap();
    let d = &all["scratch"];
    assert_eq!(
        d.host_path,
        e.root.join(format!(
            "pods/{UID}/volumes/kubernetes.io~empty-dir/scratch"
        ))
    );
    assert_eq!(d.kind, VolumeKind::EmptyDir);
    assert!(!d.read_only);
    assert_eq!(mode(&d.host_path), 0o777);
    let cache = &all["cache"].host_path;
    let big = &all["big"].host_path;
    // sizeLimit below the pod's 256Mi limit wins; above it the pod limit does.
    assert_eq!(
        e.log(),
        [
            format!("mount {} size={}", cache.display(), 64u64 << 20),
            format!("mount {} size={}", big.display(), 256u64 << 20),
        ]
    );
    // Idempotent: no second mount.
    e.mgr.setup(&p, &mem, &e.sources()).unwrap();
    assert_eq!(e.log().len(), 2);
    // Teardown unmounts and removes.
    e.mgr.teardown(UID, "cache").unwrap();
    assert!(!cache.exists());
    assert_eq!(e.log()[2], format!("unmount {}", cache.display()));
    e.mgr.teardown_pod(UID).unwrap();
    assert!(!e.root.join("pods").join(UID).exists());
    assert!(e.mounter.mounts.lock().unwrap().is_empty());
}

fn host_path(path: &Path, ty: Option<&str>) -> Volume {
    Volume {
        host_path: Some(HostPathVolumeSource {
            path: path.display().to_string(),
            type_: ty.map(Into::into),
        }),
        ..vol("hp")
    }
}

#[test]
fn host_path_type_checks() {
    let e = setup_env();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dir");
    let file = tmp.path().join("file");
    fs::create_dir(&dir).unwrap();
    fs::write(&file, "x").unwrap();
    let sock = tmp.path().join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let p = pod(vec![]);
    let ok = |path: &Path, ty: &str| {
        e.mgr
            .setup(&p, &host_path(path, Some(ty)), &e.sources())
            .unwrap_or_else(|err| panic!("{ty} {}: {err}", path.display()))
    };
    let err = |path: &Path, ty: &str| {
        e.mgr
            .setup(&p, &host_path(path, Some(ty)), &e.sources())
            .unwrap_err()
            .to_string()
    };
    // The *OrCreate types create what is missing.
    let newdir = tmp.path().join("a/b");
    let v = ok(&newdir, "DirectoryOrCreate");
    assert_eq!(v.host_path, newdir);
    assert_eq!(v.kind, VolumeKind::HostPath);
    assert!(newdir.is_dir());
    assert_eq!(mode(&newdir), 0o755);
    let newfile = tmp.path().join("newfile");
    ok(&newfile, "FileOrCreate");
    assert!(newfile.is_file());
    assert_eq!(mode(&newfile) & 0o111, 0, "created without exec bits");
    // FileOrCreate does not create parent directories.
    assert!(err(&tmp.path().join("nope/f"), "FileOrCreate").contains("No such file"));
    ok(&dir, "Directory");
    ok(&file, "File");
    ok(&sock, "Socket");
    ok(Path::new("/dev/null"), "CharDevice");
    ok(&file, "");
    ok(&tmp.path().join("missing"), "");
    let d = dir.display();
    let f = file.display();
    let m = tmp.path().join("missing");
    let m = m.display();
    for (path, ty, msg) in [
        (
            &file,
            "Directory",
            format!("hostPath type check failed: {f} is not a directory"),
        ),
        (
            &file,
            "DirectoryOrCreate",
            format!("hostPath type check failed: {f} is not a directory"),
        ),
        (
            &dir,
            "File",
            format!("hostPath type check failed: {d} is not a file"),
        ),
        (
            &dir,
            "FileOrCreate",
            format!("hostPath type check failed: {d} is not a file"),
        ),
        (
            &file,
            "Socket",
            format!("hostPath type check failed: {f} is not a socket file"),
        ),
        (
            &file,
            "CharDevice",
            format!("hostPath type check failed: {f} is not a character device"),
        ),
        (
            &file,
            "BlockDevice",
            format!("hostPath type check failed: {f} is not a block device"),
        ),
        (
            &file,
            "Bogus",
            "Bogus is an invalid volume type".to_string(),
        ),
    ] {
        assert_eq!(err(path, ty), msg, "{ty}");
    }
    assert_eq!(
        err(&tmp.path().join("missing"), "Directory"),
        format!("hostPath type check failed: {m} is not a directory")
    );
}

#[test]
fn config_map_volumes() {
    let e = setup_env();
    let all_keys = Volume {
        config_map: Some(ConfigMapVolumeSource {
            name: "cfg".into(),
            default_mode: Some(0o640),
            ..Default::default()
        }),
        ..vol("config")
    };
    let p = pod(vec![]);
    let v = e.mgr.setup(&p, &all_keys, &e.sources()).unwrap();
    assert_eq!(
        v.host_path,
        e.root
            .join(format!("pods/{UID}/volumes/{CONFIG_MAP_PLUGIN}/config"))
    );
    assert!(v.read_only, "API data volumes are read-only");
    assert_eq!(
        fs::read_to_string(v.host_path.join("app.conf")).unwrap(),
        "a=1\n"
    );
    assert_eq!(fs::read(v.host_path.join("bin")).unwrap(), [0, 1, 2]);
    assert_eq!(mode(&v.host_path.join("other")), 0o640);
    assert_eq!(
        fs::read_link(v.host_path.join("app.conf")).unwrap(),
        Path::new("..data/app.conf")
    );
    assert!(e.log().is_empty(), "configMap volumes live on disk");

    // Items: chosen keys, paths and modes.
    let items = Volume {
        config_map: Some(ConfigMapVolumeSource {
            name: "cfg".into(),
            items: Some(vec![KeyToPath {
                key: "app.conf".into(),
                path: "etc/app/app.conf".into(),
                mode: Some(0o400),
            }]),
            ..Default::default()
        }),
        ..vol("items")
    };
    let v = e.mgr.setup(&p, &items, &e.sources()).unwrap();
    let f = v.host_path.join("etc/app/app.conf");
    assert_eq!(fs::read_to_string(&f).unwrap(), "a=1\n");
    assert_eq!(mode(&f), 0o400);
    assert!(!v.host_path.join("other").exists());

    // Missing object / key.
    let missing = Volume {
        config_map: Some(ConfigMapVolumeSource {
            name: "nope".into(),
            ..Default::default()
        }),
        ..vol("missing")
    };
    let err = e.mgr.setup(&p, &missing, &e.sources()).unwrap_err();
    assert_eq!(err.to_string(), "configmaps \"nope\" not found");
    assert!(!e
        .root
        .join(format!("pods/{UID}/volumes/{CONFIG_MAP_PLUGIN}/missing"))
        .exists());
    let optional = Volume {
        config_map: Some(ConfigMapVolumeSource {
            name: "nope".into(),
            optional: Some(true),
            ..Default::default()
        }),
        ..vol("optional")
    };
    let v = e.mgr.setup(&p, &optional, &e.sources()).unwrap();
    assert!(v.host_path.join("..data").exists());
    let bad_key = Volume {
        config_map: Some(ConfigMapVolumeSource {
            name: "cfg".into(),
            items: Some(vec![KeyToPath {
                key: "absent".into(),
                path: "x".into(),
                mode: None,
            }]),
            ..Default::default()
        }),
        ..vol("badkey")
    };
    assert_eq!(
        e.mgr
            .setup(&p, &bad_key, &e.sources())
            .unwrap_err()
            .to_string(),
        "configmap references non-existent config key: absent"
    );
}

#[test]
fn refresh_rewrites_only_on_change() {
    let mut e = setup_env();
    let v = Volume {
        config_map: Some(ConfigMapVolumeSource {
            name: "cfg".into(),
            ..Default::default()
        }),
        ..vol("config")
    };
    let p = pod(vec![v.clone()]);
    let m = e.mgr.setup(&p, &v, &e.sources()).unwrap();
    let before = fs::read_link(m.host_path.join("..data")).unwrap();
    assert!(!e.mgr.refresh(&p, &v, &e.sources()).unwrap());
    assert_eq!(fs::read_link(m.host_path.join("..data")).unwrap(), before);
    let mut cm = e.objects.config_maps[&("ns1".to_string(), "cfg".to_string())].clone();
    cm.data = Some([("app.conf".to_string(), "a=2\n".to_string())].into());
    cm.binary_data = None;
    e.objects.add_config_map(cm);
    assert!(e.mgr.refresh(&p, &v, &e.sources()).unwrap());
    assert_eq!(
        fs::read_to_string(m.host_path.join("app.conf")).unwrap(),
        "a=2\n"
    );
    assert!(!m.host_path.join("other").exists());
    assert_ne!(fs::read_link(m.host_path.join("..data")).unwrap(), before);
    // Not-API volumes never need it.
    let ed = Volume {
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..vol("scratch")
    };
    assert!(!e.mgr.refresh(&p, &ed, &e.sources()).unwrap());
}

#[test]
fn secret_volumes_are_on_tmpfs() {
    let e = setup_env();
    let v = Volume {
        secret: Some(SecretVolumeSource {
            secret_name: Some("creds".into()),
            default_mode: Some(0o400),
            ..Default::default()
        }),
        ..vol("creds")
    };
    let p = pod(vec![]);
    let m = e.mgr.setup(&p, &v, &e.sources()).unwrap();
    assert_eq!(m.kind, VolumeKind::Secret);
    assert!(m.host_path.ends_with("volumes/kubernetes.io~secret/creds"));
    assert_eq!(
        e.log(),
        [format!(
            "mount {} size={}",
            m.host_path.display(),
            256u64 << 20
        )]
    );
    let f = m.host_path.join("password");
    assert_eq!(fs::read_to_string(&f).unwrap(), "s3cr3t");
    assert_eq!(mode(&f), 0o400);
    let missing = Volume {
        secret: Some(SecretVolumeSource {
            secret_name: Some("nope".into()),
            ..Default::default()
        }),
        ..vol("missing")
    };
    assert_eq!(
        e.mgr
            .setup(&p, &missing, &e.sources())
            .unwrap_err()
            .to_string(),
        "secrets \"nope\" not found"
    );
    let bad_key = Volume {
        secret: Some(SecretVolumeSource {
            secret_name: Some("creds".into()),
            items: Some(vec![KeyToPath {
                key: "user".into(),
                path: "user".into(),
                mode: None,
            }]),
            ..Default::default()
        }),
        ..vol("bad")
    };
    assert_eq!(
        e.mgr
            .setup(&p, &bad_key, &e.sources())
            .unwrap_err()
            .to_string(),
        "secret references non-existent secret key: user"
    );
}

fn dapi_items() -> Vec<DownwardAPIVolumeFile> {
    vec![
        DownwardAPIVolumeFile {
            path: "labels".into(),
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: "metadata.labels".into(),
            }),
            ..Default::default()
        },
        DownwardAPIVolumeFile {
            path: "meta/name".into(),
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: "metadata.name".into(),
            }),
            mode: Some(0o600),
            ..Default::default()
        },
        DownwardAPIVolumeFile {
            path: "mem_limit".into(),
            resource_field_ref: Some(ResourceFieldSelector {
                container_name: Some("app".into()),
                resource: "limits.memory".into(),
                divisor: Some(Quantity("1Mi".into())),
            }),
            ..Default::default()
        },
        DownwardAPIVolumeFile {
            path: "cpu_limit".into(),
            resource_field_ref: Some(ResourceFieldSelector {
                container_name: Some("app".into()),
                resource: "limits.cpu".into(),
                divisor: Some(Quantity("1m".into())),
            }),
            ..Default::default()
        },
    ]
}

#[test]
fn downward_api_volumes() {
    let e = setup_env();
    let v = Volume {
        downward_api: Some(DownwardAPIVolumeSource {
            items: Some(dapi_items()),
            default_mode: None,
        }),
        ..vol("podinfo")
    };
    let p = pod(vec![]);
    let m = e.mgr.setup(&p, &v, &e.sources()).unwrap();
    assert!(m
        .host_path
        .ends_with("volumes/kubernetes.io~downward-api/podinfo"));
    let read = |f: &str| fs::read_to_string(m.host_path.join(f)).unwrap();
    assert_eq!(read("labels"), "app=\"web\"");
    assert_eq!(read("meta/name"), "web-0");
    assert_eq!(mode(&m.host_path.join("meta/name")), 0o600);
    assert_eq!(mode(&m.host_path.join("labels")), 0o644);
    assert_eq!(read("mem_limit"), "256");
    // No cpu limit: node allocatable (4 cores).
    assert_eq!(read("cpu_limit"), "4000");
    assert!(e.log().is_empty());
}

#[test]
fn projected_volumes_and_tokens() {
    let e = setup_env();
    let v = Volume {
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o444),
            sources: Some(vec![
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "cfg".into(),
                        items: Some(vec![KeyToPath {
                            key: "app.conf".into(),
                            path: "app.conf".into(),
                            mode: None,
                        }]),
                        optional: None,
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    secret: Some(SecretProjection {
                        name: "creds".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    downward_api: Some(DownwardAPIProjection {
                        items: Some(dapi_items()[..1].to_vec()),
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some("vault".into()),
                        expiration_seconds: Some(600),
                        path: "token".into(),
                    }),
                    ..Default::default()
                },
            ]),
        }),
        ..vol("kube-api-access")
    };
    let p = pod(vec![]);
    // Without a token provider: a clear error, nothing mounted.
    let err = e.mgr.setup(&p, &v, &e.sources()).unwrap_err();
    assert!(matches!(err, VolumeError::TokenNotSupported));
    assert!(err.to_string().contains("not supported yet"), "{err}");
    assert!(e.log().is_empty());
    let provider = |req: &TokenRequest| -> Result<String, String> {
        assert_eq!(req.audiences, ["vault"]);
        assert_eq!(req.expiration_seconds, 600);
        assert_eq!(req.service_account, "default");
        assert_eq!(req.pod_uid, UID);
        Ok("tok-123".to_string())
    };
    let sources = VolumeSources {
        tokens: Some(&provider),
        ..e.sources()
    };
    let m = e.mgr.setup(&p, &v, &sources).unwrap();
    assert!(m
        .host_path
        .ends_with("volumes/kubernetes.io~projected/kube-api-access"));
    assert_eq!(e.log().len(), 1, "projected volumes are on tmpfs");
    let read = |f: &str| fs::read_to_string(m.host_path.join(f)).unwrap();
    assert_eq!(read("app.conf"), "a=1\n");
    assert_eq!(read("password"), "s3cr3t");
    assert_eq!(read("labels"), "app=\"web\"");
    assert_eq!(read("token"), "tok-123");
    assert_eq!(mode(&m.host_path.join("token")), 0o444);
}

#[test]
fn claims_bound_to_host_path_and_local_volumes() {
    let mut e = setup_env();
    let tmp = tempfile::tempdir().unwrap();
    let claim = |name: &str, pv: Option<&str>, phase: &str| PersistentVolumeClaim {
        metadata: meta("ns1", name),
        spec: Some(PersistentVolumeClaimSpec {
            volume_name: pv.map(Into::into),
            ..Default::default()
        }),
        status: Some(PersistentVolumeClaimStatus {
            phase: Some(phase.into()),
            ..Default::default()
        }),
    };
    e.objects.add_claim(claim("data", Some("pv-host"), "Bound"));
    e.objects
        .add_claim(claim("fast", Some("pv-local"), "Bound"));
    e.objects.add_claim(claim("pending", None, "Pending"));
    e.objects.add_claim(claim("nfs", Some("pv-nfs"), "Bound"));
    let host_dir = tmp.path().join("host");
    e.objects.add_volume(PersistentVolume {
        metadata: ObjectMeta {
            name: Some("pv-host".into()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            host_path: Some(HostPathVolumeSource {
                path: host_dir.display().to_string(),
                type_: Some("DirectoryOrCreate".into()),
            }),
            ..Default::default()
        }),
        status: None,
    });
    e.objects.add_volume(PersistentVolume {
        metadata: ObjectMeta {
            name: Some("pv-local".into()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            local: Some(LocalVolumeSource {
                path: tmp.path().display().to_string(),
                fs_type: None,
            }),
            ..Default::default()
        }),
        status: None,
    });
    e.objects.add_volume(PersistentVolume {
        metadata: ObjectMeta {
            name: Some("pv-nfs".into()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec::default()),
        status: None,
    });
    let pvc = |name: &str, claim: &str, ro: bool| Volume {
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim.into(),
            read_only: Some(ro),
        }),
        ..vol(name)
    };
    let p = pod(vec![]);
    let m = e
        .mgr
        .setup(&p, &pvc("d", "data", false), &e.sources())
        .unwrap();
    assert_eq!(m.host_path, host_dir);
    assert!(host_dir.is_dir());
    assert!(!m.read_only);
    let m = e
        .mgr
        .setup(&p, &pvc("f", "fast", true), &e.sources())
        .unwrap();
    assert_eq!(m.host_path, tmp.path());
    assert!(m.read_only);
    assert_eq!(m.kind, VolumeKind::PersistentVolumeClaim);
    let err = |claim: &str| {
        e.mgr
            .setup(&p, &pvc("x", claim, false), &e.sources())
            .unwrap_err()
            .to_string()
    };
    assert_eq!(err("absent"), "persistentvolumeclaims \"absent\" not found");
    assert_eq!(
        err("pending"),
        "PVC ns1/pending has non-bound phase (\"Pending\") or empty pvc.Spec.VolumeName (\"\")"
    );
    assert!(err("nfs").contains("only hostPath and local"));
}

#[test]
fn sub_paths_stay_inside_the_volume() {
    let e = setup_env();
    let ed = Volume {
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..vol("scratch")
    };
    let p = pod(vec![]);
    let m = e.mgr.setup(&p, &ed, &e.sources()).unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::create_dir(m.host_path.join("real")).unwrap();
    symlink(outside.path(), m.host_path.join("escape")).unwrap();
    symlink(
        "../../../../../../../../../etc",
        m.host_path.join("relescape"),
    )
    .unwrap();
    symlink("real", m.host_path.join("inside")).unwrap();
    let mnt = |sub: Option<&str>, expr: Option<&str>, ro: bool| VolumeMount {
        name: "scratch".into(),
        mount_path: "/data".into(),
        sub_path: sub.map(Into::into),
        sub_path_expr: expr.map(Into::into),
        read_only: Some(ro),
        ..Default::default()
    };
    let env = [("POD_NAME".to_string(), "web-0".to_string())];
    let canon = fs::canonicalize(&m.host_path).unwrap();
    // Plain volume, read-only flag from the mount.
    assert_eq!(
        e.mgr
            .container_mount(&m, &mnt(None, None, true), &env)
            .unwrap(),
        (m.host_path.clone(), true)
    );
    // Missing sub-path directories are created.
    let (p1, ro) = e
        .mgr
        .container_mount(&m, &mnt(Some("logs/app"), None, false), &env)
        .unwrap();
    assert_eq!(p1, canon.join("logs/app"));
    assert!(p1.is_dir() && !ro);
    // subPathExpr expands the container's variables.
    let (p2, _) = e
        .mgr
        .container_mount(&m, &mnt(None, Some("logs/$(POD_NAME)"), false), &env)
        .unwrap();
    assert_eq!(p2, canon.join("logs/web-0"));
    // Symlinks inside are fine, out of the volume are refused.
    let (p3, _) = e
        .mgr
        .container_mount(&m, &mnt(Some("inside"), None, false), &env)
        .unwrap();
    assert_eq!(p3, canon.join("real"));
    for bad in ["escape", "escape/x", "relescape", "inside/../../x"] {
        let err = e
            .mgr
            .container_mount(&m, &mnt(Some(bad), None, false), &env)
            .unwrap_err();
        assert!(
            matches!(
                err,
                VolumeError::SubPathEscape { .. } | VolumeError::InvalidSubPath(_)
            ),
            "{bad}: {err}"
        );
    }
    assert!(
        !outside.path().join("x").exists(),
        "nothing created outside"
    );
    assert!(matches!(
        e.mgr
            .container_mount(&m, &mnt(Some("/etc"), None, false), &env)
            .unwrap_err(),
        VolumeError::InvalidSubPath(_)
    ));
    // API volumes stay read-only whatever the mount says.
    let cm = Volume {
        config_map: Some(ConfigMapVolumeSource {
            name: "cfg".into(),
            ..Default::default()
        }),
        ..vol("config")
    };
    let m = e.mgr.setup(&p, &cm, &e.sources()).unwrap();
    assert!(
        e.mgr
            .container_mount(&m, &mnt(None, None, false), &env)
            .unwrap()
            .1
    );
}

#[test]
fn pod_dns_files() {
    let e = setup_env();
    let (hosts, resolv) = e
        .mgr
        .write_pod_dns_files(
            UID,
            "127.0.0.1\tlocalhost\n",
            Some("nameserver 10.96.0.10\n"),
        )
        .unwrap();
    assert_eq!(hosts, e.root.join(format!("pods/{UID}/etc-hosts")));
    assert_eq!(
        fs::read_to_string(&hosts).unwrap(),
        "127.0.0.1\tlocalhost\n"
    );
    assert_eq!(
        fs::read_to_string(resolv.unwrap()).unwrap(),
        "nameserver 10.96.0.10\n"
    );
    assert_eq!(mode(&hosts), 0o644);
}

#[test]
fn unsupported_volume_types_say_so() {
    let e = setup_env();
    let v = Volume {
        nfs: Some(Default::default()),
        ..vol("share")
    };
    assert_eq!(
        e.mgr
            .setup(&pod(vec![]), &v, &e.sources())
            .unwrap_err()
            .to_string(),
        "volume \"share\": unsupported volume type"
    );
}

#[test]
fn re_setup_on_every_sync_is_idempotent_and_cheap() {
    let e = setup_env();
    let cfg = Volume {
        config_map: Some(ConfigMapVolumeSource {
            name: "cfg".into(),
            ..Default::default()
        }),
        ..vol("config")
    };
    let scratch = Volume {
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..vol("scratch")
    };
    let p = pod(vec![cfg, scratch]);
    let first = e.mgr.setup_all(&p, &e.sources()).unwrap();
    let data = first["config"].host_path.join("..data");
    let version = fs::read_link(&data).unwrap();
    // What the pod did to its emptyDir stays: a re-sync sets it up no more.
    let dir = &first["scratch"].host_path;
    fs::write(dir.join("kept"), "x").unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o750)).unwrap();
    let again = e.mgr.setup_all(&p, &e.sources()).unwrap();
    assert_eq!(again, first);
    assert_eq!(mode(dir), 0o750);
    assert!(dir.join("kept").exists());
    // Unchanged API data: the same version directory, nothing rewritten.
    assert_eq!(fs::read_link(&data).unwrap(), version);
}

#[test]
fn token_errors_read_as_upstream() {
    let e = setup_env();
    let v = Volume {
        projected: Some(ProjectedVolumeSource {
            default_mode: None,
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: None,
                    expiration_seconds: None,
                    path: "token".into(),
                }),
                ..Default::default()
            }]),
        }),
        ..vol("kube-api-access")
    };
    let p = pod(vec![]);
    let provider = |_: &TokenRequest| -> Result<String, String> {
        Err("failed to fetch token: the server could not find the requested resource".into())
    };
    let sources = VolumeSources {
        tokens: Some(&provider),
        ..e.sources()
    };
    let err = e.mgr.setup(&p, &v, &sources).unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to fetch token: the server could not find the requested resource"
    );
}
