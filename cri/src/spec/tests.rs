//! Table tests for the CRI → OCI mapping.

use super::*;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

fn host() -> HostInfo {
    HostInfo {
        cgroup_v2: false,
        hugetlb: false,
        min_oom_score_adj: None,
    }
}

fn rootfs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("etc")).unwrap();
    fs::write(
        dir.path().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33::/var/www:/bin/false\nbob:x:1000:1001::/home/bob:/bin/sh\n",
    )
    .unwrap();
    fs::write(
        dir.path().join("etc/group"),
        "root:x:0:\nwww:x:33:\nbob:x:1001:\nvideo:x:44:bob,www\naudio:x:29:bob\n",
    )
    .unwrap();
    dir
}

fn build_with(
    cfg: &pb::ContainerConfig,
    image: &ImageConfig,
    f: impl FnOnce(&mut SpecInput),
) -> Result<Spec, SpecError> {
    let root = rootfs();
    let sandbox = pb::PodSandboxConfig {
        hostname: "pod-host".into(),
        linux: Some(pb::LinuxPodSandboxConfig {
            sysctls: [("net.ipv4.ip_forward".to_string(), "1".to_string())].into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut input = SpecInput {
        config: cfg,
        sandbox: &sandbox,
        image,
        rootfs: root.path().to_owned(),
        namespaces: NamespacePaths {
            net: Some("/run/netns/x".into()),
            ipc: Some("/proc/1/ns/ipc".into()),
            uts: Some("/proc/1/ns/uts".into()),
            pid: PidNamespace::Container,
        },
        cgroups_path: "/capstan/pod/c".into(),
        hostname_path: Some("/run/pod/hostname".into()),
        resolv_conf_path: Some("/run/pod/resolv.conf".into()),
        hosts_path: None,
        pids_limit: None,
        host: host(),
    };
    f(&mut input);
    build(&input)
}

fn sc(cfg: &mut pb::ContainerConfig) -> &mut pb::LinuxContainerSecurityContext {
    cfg.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageConfig {
    let v = |s: &[&str]| (!s.is_empty()).then(|| s.iter().map(|x| x.to_string()).collect());
    ImageConfig {
        entrypoint: v(entrypoint),
        cmd: v(cmd),
        ..Default::default()
    }
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|x| x.to_string()).collect()
}

#[test]
fn args_merge_like_containerd() {
    // (entrypoint, cmd, CRI command, CRI args, expected)
    type Case<'a> = (
        &'a [&'a str],
        &'a [&'a str],
        &'a [&'a str],
        &'a [&'a str],
        &'a [&'a str],
    );
    let cases: &[Case] = &[
        (&["/ep"], &["c1"], &[], &[], &["/ep", "c1"]),
        (&["/ep"], &["c1"], &["/x"], &[], &["/x"]),
        (&["/ep"], &["c1"], &[], &["a"], &["/ep", "a"]),
        (&["/ep"], &["c1"], &["/x"], &["a"], &["/x", "a"]),
        (&[], &["/bin/sh"], &[], &[], &["/bin/sh"]),
        (&[""], &["/bin/sh"], &[], &[], &["/bin/sh"]),
    ];
    for (ep, cmd, command, args, want) in cases {
        let cfg = pb::ContainerConfig {
            command: strings(command),
            args: strings(args),
            ..Default::default()
        };
        let spec = build_with(&cfg, &image(ep, cmd), |_| {}).unwrap();
        let got = spec.process().as_ref().unwrap().args().clone().unwrap();
        assert_eq!(
            got,
            strings(want),
            "ep={ep:?} cmd={cmd:?} command={command:?} args={args:?}"
        );
    }
    let err = build_with(&pb::ContainerConfig::default(), &image(&[], &[]), |_| {}).unwrap_err();
    assert_eq!(err.to_string(), "no command specified");
}

#[test]
fn env_and_cwd() {
    let img = ImageConfig {
        env: Some(strings(&["PATH=/img", "A=1", "B=2"])),
        working_dir: Some("/srv".into()),
        cmd: Some(strings(&["x"])),
        ..Default::default()
    };
    let cfg = pb::ContainerConfig {
        envs: vec![
            pb::KeyValue {
                key: "B".into(),
                value: "3".into(),
            },
            pb::KeyValue {
                key: "C".into(),
                value: "4".into(),
            },
        ],
        ..Default::default()
    };
    let spec = build_with(&cfg, &img, |_| {}).unwrap();
    let p = spec.process().as_ref().unwrap();
    assert_eq!(
        p.env().clone().unwrap(),
        strings(&["PATH=/img", "A=1", "B=3", "C=4"])
    );
    assert_eq!(p.cwd(), Path::new("/srv"));
    let cfg = pb::ContainerConfig {
        working_dir: "/w".into(),
        ..cfg
    };
    let spec = build_with(&cfg, &img, |_| {}).unwrap();
    assert_eq!(spec.process().as_ref().unwrap().cwd(), Path::new("/w"));
}

#[test]
fn users_and_groups() {
    // (image User, run_as_user, run_as_username, run_as_group, supplemental, uid, gid, groups)
    type Case<'a> = (
        &'a str,
        Option<i64>,
        &'a str,
        Option<i64>,
        &'a [i64],
        u32,
        u32,
        &'a [u32],
    );
    let cases: &[Case] = &[
        ("", None, "", None, &[], 0, 0, &[0]),
        ("www", None, "", None, &[], 33, 33, &[33, 44]),
        ("1000", None, "", None, &[], 1000, 1001, &[1001, 44, 29]),
        ("1000:44", None, "", None, &[], 1000, 44, &[44, 29]),
        ("bob:audio", None, "", None, &[], 1000, 29, &[29, 44]),
        ("4242", None, "", None, &[], 4242, 0, &[0]),
        (
            "www",
            Some(1000),
            "",
            None,
            &[],
            1000,
            1001,
            &[1001, 44, 29],
        ),
        ("", None, "www", Some(7), &[5, 7], 33, 7, &[7, 44, 5]),
    ];
    for (img_user, ru, run, rg, sup, uid, gid, groups) in cases {
        let mut cfg = pb::ContainerConfig {
            command: strings(&["x"]),
            ..Default::default()
        };
        let s = sc(&mut cfg);
        s.run_as_user = ru.map(|value| pb::Int64Value { value });
        s.run_as_username = run.to_string();
        s.run_as_group = rg.map(|value| pb::Int64Value { value });
        s.supplemental_groups = sup.to_vec();
        let img = ImageConfig {
            user: Some(img_user.to_string()),
            ..Default::default()
        };
        let spec = build_with(&cfg, &img, |_| {}).unwrap();
        let u = spec.process().as_ref().unwrap().user();
        assert_eq!(
            (u.uid(), u.gid()),
            (*uid, *gid),
            "case {img_user:?} {ru:?} {run:?}"
        );
        assert_eq!(
            u.additional_gids().clone().unwrap(),
            groups.to_vec(),
            "case {img_user:?}"
        );
    }
    let img = ImageConfig {
        user: Some("nobody".into()),
        cmd: Some(strings(&["x"])),
        ..Default::default()
    };
    let err = build_with(&pb::ContainerConfig::default(), &img, |_| {}).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"user "nobody": no matching entries in passwd file"#
    );
}

fn caps_of(spec: &Spec) -> Vec<String> {
    let mut v: Vec<String> = spec
        .process()
        .as_ref()
        .unwrap()
        .capabilities()
        .as_ref()
        .unwrap()
        .bounding()
        .clone()
        .unwrap()
        .iter()
        .map(|c| {
            serde_json::to_value(c)
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn capabilities_add_drop() {
    let run = |add: &[&str], drop: &[&str]| {
        let mut cfg = pb::ContainerConfig {
            command: strings(&["x"]),
            ..Default::default()
        };
        sc(&mut cfg).capabilities = Some(pb::Capability {
            add_capabilities: strings(add),
            drop_capabilities: strings(drop),
            ..Default::default()
        });
        build_with(&cfg, &ImageConfig::default(), |_| {}).map(|s| caps_of(&s))
    };
    let default = run(&[], &[]).unwrap();
    assert_eq!(default.len(), DEFAULT_CAPABILITIES.len());
    let added = run(&["SYS_ADMIN"], &["NET_RAW", "CAP_KILL"]).unwrap();
    assert!(added.contains(&"CAP_SYS_ADMIN".to_string()));
    assert!(
        !added.contains(&"CAP_NET_RAW".to_string()) && !added.contains(&"CAP_KILL".to_string())
    );
    assert_eq!(
        run(&["NET_BIND_SERVICE"], &["ALL"]).unwrap(),
        strings(&["CAP_NET_BIND_SERVICE"])
    );
    assert!(run(&["ALL"], &[]).unwrap().len() > 30);
    assert!(run(&["ALL"], &["SYS_ADMIN"])
        .unwrap()
        .iter()
        .all(|c| c != "CAP_SYS_ADMIN"));
    assert_eq!(
        run(&["BOGUS"], &[]).unwrap_err().to_string(),
        r#"unknown capability "CAP_BOGUS""#
    );
}

#[test]
fn security_defaults_and_privileged() {
    let mut cfg = pb::ContainerConfig {
        command: strings(&["x"]),
        ..Default::default()
    };
    sc(&mut cfg).seccomp = Some(pb::SecurityProfile {
        profile_type: ProfileType::RuntimeDefault as i32,
        localhost_ref: String::new(),
    });
    sc(&mut cfg).no_new_privs = true;
    sc(&mut cfg).readonly_rootfs = true;
    let spec = build_with(&cfg, &ImageConfig::default(), |_| {}).unwrap();
    let linux = spec.linux().as_ref().unwrap();
    assert_eq!(
        linux.masked_paths().clone().unwrap().len(),
        DEFAULT_MASKED_PATHS.len()
    );
    assert_eq!(
        linux.readonly_paths().clone().unwrap().len(),
        DEFAULT_READONLY_PATHS.len()
    );
    assert!(linux.seccomp().is_some());
    assert_eq!(
        spec.process().as_ref().unwrap().no_new_privileges(),
        Some(true)
    );
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
    // resolv.conf follows the read-only root.
    let resolv = spec
        .mounts()
        .iter()
        .flatten()
        .find(|m| m.destination() == Path::new("/etc/resolv.conf"))
        .unwrap();
    assert!(resolv
        .options()
        .as_ref()
        .unwrap()
        .contains(&"ro".to_string()));

    sc(&mut cfg).privileged = true;
    let spec = build_with(&cfg, &ImageConfig::default(), |_| {}).unwrap();
    let linux = spec.linux().as_ref().unwrap();
    assert!(linux.masked_paths().is_none() && linux.readonly_paths().is_none());
    assert!(linux.seccomp().is_none());
    assert!(caps_of(&spec).contains(&"CAP_SYS_ADMIN".to_string()));
    let rules = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .clone()
        .unwrap();
    assert!(rules[0].allow(), "privileged allows all devices");
    assert!(linux
        .devices()
        .as_ref()
        .unwrap()
        .iter()
        .any(|d| d.path() == Path::new("/dev/null")));
}

#[test]
#[allow(deprecated)]
fn seccomp_profiles() {
    let with = |p: Option<pb::SecurityProfile>, path: &str| {
        let mut cfg = pb::ContainerConfig {
            command: strings(&["x"]),
            ..Default::default()
        };
        sc(&mut cfg).seccomp = p;
        sc(&mut cfg).seccomp_profile_path = path.into();
        build_with(&cfg, &ImageConfig::default(), |_| {})
    };
    assert!(with(None, "")
        .unwrap()
        .linux()
        .as_ref()
        .unwrap()
        .seccomp()
        .is_none());
    assert!(with(None, "runtime/default")
        .unwrap()
        .linux()
        .as_ref()
        .unwrap()
        .seccomp()
        .is_some());
    let unconfined = pb::SecurityProfile {
        profile_type: ProfileType::Unconfined as i32,
        ..Default::default()
    };
    assert!(with(Some(unconfined), "runtime/default")
        .unwrap()
        .linux()
        .as_ref()
        .unwrap()
        .seccomp()
        .is_none());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.json");
    fs::write(&file, r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#).unwrap();
    let local = pb::SecurityProfile {
        profile_type: ProfileType::Localhost as i32,
        localhost_ref: file.to_string_lossy().into(),
    };
    let spec = with(Some(local), "").unwrap();
    let s = spec.linux().as_ref().unwrap().seccomp().clone().unwrap();
    assert_eq!(
        s.syscalls().as_ref().unwrap()[0].names(),
        &strings(&["mkdir"])
    );
    let missing = pb::SecurityProfile {
        profile_type: ProfileType::Localhost as i32,
        localhost_ref: "/nonexistent.json".into(),
    };
    assert!(with(Some(missing), "").is_err());
}

#[test]
fn mounts_and_propagation() {
    let cfg = pb::ContainerConfig {
        command: strings(&["x"]),
        mounts: vec![
            pb::Mount {
                container_path: "/data/sub".into(),
                host_path: "/srv/b".into(),
                readonly: true,
                ..Default::default()
            },
            pb::Mount {
                container_path: "/data".into(),
                host_path: "/srv/a".into(),
                propagation: pb::MountPropagation::PropagationHostToContainer as i32,
                ..Default::default()
            },
            pb::Mount {
                container_path: "/dev/shm".into(),
                host_path: "/run/pod/shm".into(),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let spec = build_with(&cfg, &ImageConfig::default(), |_| {}).unwrap();
    let mounts = spec.mounts().clone().unwrap();
    let pos = |d: &str| {
        mounts
            .iter()
            .position(|m| m.destination() == Path::new(d))
            .unwrap()
    };
    assert!(pos("/data") < pos("/data/sub"), "parents first");
    let opts = |d: &str| mounts[pos(d)].options().clone().unwrap();
    assert_eq!(opts("/data"), strings(&["rbind", "rslave", "rw"]));
    assert_eq!(opts("/data/sub"), strings(&["rbind", "rprivate", "ro"]));
    assert_eq!(
        mounts
            .iter()
            .filter(|m| m.destination() == Path::new("/dev/shm"))
            .count(),
        1
    );
    assert_eq!(mounts[pos("/dev/shm")].typ().as_deref(), Some("bind"));
    assert_eq!(
        spec.linux()
            .as_ref()
            .unwrap()
            .rootfs_propagation()
            .as_deref(),
        Some("rslave")
    );
    assert!(mounts
        .iter()
        .any(|m| m.destination() == Path::new("/etc/hostname")));
    assert!(!mounts
        .iter()
        .any(|m| m.destination() == Path::new("/etc/hosts")));
    let bad = pb::ContainerConfig {
        command: strings(&["x"]),
        mounts: vec![pb::Mount {
            container_path: "rel".into(),
            host_path: "/x".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    assert!(build_with(&bad, &ImageConfig::default(), |_| {}).is_err());
}

#[test]
fn namespaces_hostname_sysctls() {
    let cfg = pb::ContainerConfig {
        command: strings(&["x"]),
        ..Default::default()
    };
    let spec = build_with(&cfg, &ImageConfig::default(), |i| {
        i.namespaces.pid = PidNamespace::Pod("/proc/77/ns/pid".into());
    })
    .unwrap();
    let linux = spec.linux().as_ref().unwrap();
    let ns = linux.namespaces().clone().unwrap();
    let find = |t: LinuxNamespaceType| ns.iter().find(|n| n.typ() == t).cloned();
    assert_eq!(
        find(LinuxNamespaceType::Pid).unwrap().path().clone(),
        Some("/proc/77/ns/pid".into())
    );
    assert_eq!(
        find(LinuxNamespaceType::Network).unwrap().path().clone(),
        Some("/run/netns/x".into())
    );
    assert!(find(LinuxNamespaceType::Mount).is_some());
    assert!(
        find(LinuxNamespaceType::Cgroup).is_none(),
        "no cgroup namespace on v1"
    );
    assert_eq!(spec.hostname().as_deref(), Some("pod-host"));
    assert_eq!(linux.sysctl().as_ref().unwrap()["net.ipv4.ip_forward"], "1");
    assert_eq!(
        linux.cgroups_path().as_deref(),
        Some(Path::new("/capstan/pod/c"))
    );

    let spec = build_with(&cfg, &ImageConfig::default(), |i| {
        i.namespaces = NamespacePaths {
            pid: PidNamespace::Host,
            ..Default::default()
        };
    })
    .unwrap();
    let ns = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
    assert_eq!(ns.len(), 1, "only a mount namespace: {ns:?}");
    assert!(spec.hostname().is_none());
    let sys = spec
        .mounts()
        .iter()
        .flatten()
        .find(|m| m.destination() == Path::new("/sys"))
        .unwrap();
    assert_eq!(
        sys.typ().as_deref(),
        Some("bind"),
        "host network binds /sys"
    );
}

#[test]
fn resources_and_oom_score_adj() {
    let mut cfg = pb::ContainerConfig {
        command: strings(&["x"]),
        ..Default::default()
    };
    cfg.linux.get_or_insert_with(Default::default).resources = Some(pb::LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 512,
        memory_limit_in_bytes: 64 << 20,
        memory_swap_limit_in_bytes: 128 << 20,
        oom_score_adj: -997,
        cpuset_cpus: "0".into(),
        hugepage_limits: vec![pb::HugepageLimit {
            page_size: "2MB".into(),
            limit: 1 << 21,
        }],
        unified: [("memory.high".to_string(), "1000000".to_string())].into(),
        ..Default::default()
    });
    let spec = build_with(&cfg, &ImageConfig::default(), |i| {
        i.pids_limit = Some(100);
        i.host.min_oom_score_adj = Some(0);
    })
    .unwrap();
    let r = spec.linux().as_ref().unwrap().resources().clone().unwrap();
    let cpu = r.cpu().clone().unwrap();
    assert_eq!(
        (cpu.shares(), cpu.quota(), cpu.period()),
        (Some(512), Some(50_000), Some(100_000))
    );
    assert_eq!(cpu.cpus().as_deref(), Some("0"));
    let mem = r.memory().unwrap();
    assert_eq!((mem.limit(), mem.swap()), (Some(64 << 20), Some(128 << 20)));
    assert_eq!(r.pids().as_ref().unwrap().limit(), 100);
    assert!(
        r.hugepage_limits().is_none(),
        "no hugetlb controller, no hugepage limits"
    );
    assert!(r.unified().is_none(), "unified only on v2");
    assert_eq!(
        spec.process().as_ref().unwrap().oom_score_adj(),
        Some(0),
        "clamped"
    );

    let spec = build_with(&cfg, &ImageConfig::default(), |i| {
        i.host = HostInfo {
            cgroup_v2: true,
            hugetlb: true,
            min_oom_score_adj: None,
        };
    })
    .unwrap();
    let r = spec.linux().as_ref().unwrap().resources().clone().unwrap();
    assert_eq!(r.hugepage_limits().as_ref().unwrap().len(), 1);
    assert_eq!(r.unified().as_ref().unwrap()["memory.high"], "1000000");
    assert_eq!(spec.process().as_ref().unwrap().oom_score_adj(), Some(-997));
}

#[test]
fn devices_from_config() {
    let cfg = pb::ContainerConfig {
        command: strings(&["x"]),
        devices: vec![pb::Device {
            container_path: "/dev/mynull".into(),
            host_path: "/dev/null".into(),
            permissions: "rw".into(),
        }],
        ..Default::default()
    };
    let spec = build_with(&cfg, &ImageConfig::default(), |_| {}).unwrap();
    let linux = spec.linux().as_ref().unwrap();
    let d = &linux.devices().clone().unwrap()[0];
    assert_eq!(
        (d.path().to_str(), d.major(), d.minor()),
        (Some("/dev/mynull"), 1, 3)
    );
    let rules = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .clone()
        .unwrap();
    assert!(!rules[0].allow());
    assert_eq!(rules[1].access().as_deref(), Some("rw"));
    let bad = pb::ContainerConfig {
        command: strings(&["x"]),
        devices: vec![pb::Device {
            host_path: "/etc/passwd".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    assert!(build_with(&bad, &ImageConfig::default(), |_| {}).is_err());
}
