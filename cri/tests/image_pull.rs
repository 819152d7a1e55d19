//! Pulls against the real local registries of `scripts/test-images.sh` (Debian's docker-registry
//! on 127.0.0.1:5000 and, with basic auth, :5001), run as root: tags, digests, the docker.io
//! mirror, Docker and zstd media types, manifest lists, basic and bearer auth, de-duplicated
//! concurrent pulls, and the failures (missing, unreachable, corrupt, malicious).

mod image_support;

use std::sync::Arc;
use std::time::Duration;

use cri::image::{status_of, ImageError, ImageStore};
use cri::pb::AuthConfig;
use image_support::*;

fn open(root: &TestRoot, config: &tempfile::TempDir) -> Arc<ImageStore> {
    ImageStore::open(root.path(), Some(config.path().to_path_buf())).unwrap()
}

async fn timed<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .expect("the pull did not finish within 120 s")
}

fn count_dir(p: &std::path::Path) -> usize {
    std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_by_tag_digest_and_through_the_docker_io_mirror() {
    ensure_registry();
    let root = TestRoot::new();
    let config = registry_config(&[]);
    let store = open(&root, &config);

    let r = timed(store.pull("busybox", None)).await.unwrap();
    let (_, manifest_digest) = get_manifest("library/busybox", "latest").await;
    assert!(r.id.starts_with("sha256:") && r.id.len() == 71, "{}", r.id);
    assert_eq!(r.repo_tags, ["docker.io/library/busybox:latest"]);
    assert_eq!(
        r.repo_digests,
        [format!("docker.io/library/busybox@{manifest_digest}")]
    );
    assert_eq!(r.config.cmd.as_deref(), Some(&["sh".to_string()][..]));
    assert!(r.size > 0);

    // Resolution as containerd's ImageStatus does it.
    for name in [
        "busybox".to_string(),
        "docker.io/library/busybox:latest".to_string(),
        r.id.clone(),
        r.id["sha256:".len()..].to_string(),
        r.id["sha256:".len()..][..12].to_string(),
        format!("busybox@{manifest_digest}"),
    ] {
        assert_eq!(
            store.get(&name).map(|x| x.id),
            Some(r.id.clone()),
            "get({name})"
        );
    }
    assert!(store.get("busybox:nope").is_none());

    // Again: the manifest is the same, so nothing is downloaded.
    let start = std::time::Instant::now();
    let again = timed(store.pull("docker.io/library/busybox:latest", None))
        .await
        .unwrap();
    assert_eq!(again.id, r.id);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "a pull of a present image took {:?}",
        start.elapsed()
    );

    // By digest, straight from the registry (plain HTTP from hosts.toml), and another tag.
    let by_digest = timed(store.pull(
        &format!("{REGISTRY}/library/busybox@{manifest_digest}"),
        None,
    ))
    .await
    .unwrap();
    assert_eq!(by_digest.id, r.id);
    let tagged = timed(store.pull(&format!("{REGISTRY}/library/busybox:1.36"), None))
        .await
        .unwrap();
    assert_eq!(tagged.id, r.id);
    let rec = store.get(&r.id).unwrap();
    assert!(
        rec.repo_tags
            .contains(&format!("{REGISTRY}/library/busybox:1.36"))
            && rec
                .repo_tags
                .contains(&"docker.io/library/busybox:latest".to_string()),
        "{:?}",
        rec.repo_tags
    );
    assert!(rec
        .repo_digests
        .contains(&format!("{REGISTRY}/library/busybox@{manifest_digest}")));
    assert_eq!(store.list().len(), 1);
    // One layer, one snapshot.
    assert_eq!(count_dir(&root.path().join("images/snapshots")), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_media_types_zstd_and_whiteouts_make_working_root_filesystems() {
    ensure_registry();
    let root = TestRoot::new();
    let config = registry_config(&[]);
    let store = open(&root, &config);
    let oci = timed(store.pull("busybox", None)).await.unwrap();
    let docker = timed(store.pull("busybox-docker", None)).await.unwrap();
    assert!(
        docker.layers[0].media_type.contains("docker"),
        "{:?}",
        docker.layers
    );
    let zstd = timed(store.pull("busybox-zstd", None)).await.unwrap();
    assert!(
        zstd.layers[0].media_type.contains("zstd"),
        "{:?}",
        zstd.layers
    );
    // The same uncompressed layer: one shared snapshot.
    assert_eq!(oci.chain_ids, docker.chain_ids);
    assert_eq!(oci.chain_ids, zstd.chain_ids);
    assert_eq!(count_dir(&root.path().join("images/snapshots")), 1);

    let layers = timed(store.pull(&format!("{REGISTRY}/capstan-test/layers:1.0"), None))
        .await
        .unwrap();
    assert_eq!(layers.chain_ids.len(), 2);
    assert_eq!(
        layers.chain_ids[0], oci.chain_ids[0],
        "the base layer is shared"
    );

    let configured = timed(store.pull(&format!("{REGISTRY}/capstan-test/config:1.0"), None))
        .await
        .unwrap();
    assert_eq!(configured.config.user.as_deref(), Some("1000:1000"));
    assert_eq!(
        configured.config.working_dir.as_deref(),
        Some("/home/capstan")
    );
    assert_eq!(configured.config.stop_signal.as_deref(), Some("SIGINT"));
    assert_eq!(
        configured.config.entrypoint,
        Some(vec!["/bin/sh".to_string(), "-c".to_string()])
    );
    assert_eq!(configured.user(), (Some(1000), String::new()));

    for (container, image) in [("c-zstd", &zstd.id), ("c-layers", &layers.id)] {
        let rootfs = store.prepare_rootfs(container, image).unwrap();
        let target = root.path().join(format!("mnt-{container}"));
        std::fs::create_dir_all(&target).unwrap();
        rootfs.mount(&target).unwrap();
        let _m = Mounted(target.clone());
        assert!(target.join("bin/busybox").is_file(), "{container}: busybox");
        if container == "c-layers" {
            assert_eq!(
                std::fs::read_to_string(target.join("etc/layer2")).unwrap(),
                "added in layer 2\n"
            );
            assert_eq!(
                std::fs::read_to_string(target.join("etc/motd")).unwrap(),
                "replaced in layer 2\n"
            );
            assert!(
                std::fs::symlink_metadata(target.join("bin/vi")).is_err(),
                "the whiteout hides /bin/vi"
            );
            assert!(target.join("bin/ls").exists());
        }
        // Writable, without touching the layers.
        std::fs::write(target.join("tmp/written"), b"x").unwrap();
        assert!(rootfs.upper.join("tmp/written").is_file());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_list_is_narrowed_to_this_platform() {
    ensure_registry();
    let repo = "capstan-test/multi";
    let (amd64, amd64_digest) = get_manifest("library/busybox", "latest").await;
    let (other, other_digest) = get_manifest("library/busybox-zstd", "latest").await;
    for (m, from) in [
        (&amd64, "library/busybox"),
        (&other, "library/busybox-zstd"),
    ] {
        let v: serde_json::Value = serde_json::from_slice(m).unwrap();
        mount_blob(repo, from, v["config"]["digest"].as_str().unwrap()).await;
        for l in v["layers"].as_array().unwrap() {
            mount_blob(repo, from, l["digest"].as_str().unwrap()).await;
        }
    }
    let mt = "application/vnd.oci.image.manifest.v1+json";
    push_manifest(repo, &amd64_digest, mt, &amd64).await;
    push_manifest(repo, &other_digest, mt, &other).await;
    // The arm64 entry comes first: a pull that took the first entry would get it.
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": mt, "digest": other_digest, "size": other.len(),
             "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
            {"mediaType": mt, "digest": amd64_digest, "size": amd64.len(),
             "platform": {"architecture": "amd64", "os": "linux"}},
        ],
    })
    .to_string();
    let index_digest = push_manifest(
        repo,
        "1.0",
        "application/vnd.oci.image.index.v1+json",
        index.as_bytes(),
    )
    .await;

    let root = TestRoot::new();
    let config = registry_config(&[]);
    let store = open(&root, &config);
    let r = timed(store.pull(&format!("{REGISTRY}/{repo}:1.0"), None))
        .await
        .unwrap();
    assert_eq!(cri::image::host_platform(), ("linux", "amd64"));
    assert_eq!(r.manifest_digest, amd64_digest, "amd64 was chosen");
    assert_eq!(
        r.repo_digests,
        [format!("{REGISTRY}/{repo}@{index_digest}")],
        "the repo digest is the index's, as containerd reports it"
    );
    assert!(r.blobs.contains(&index_digest));
    assert_eq!(r.platform, "linux/amd64");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_from_the_cri_auth_config() {
    ensure_registry();
    let root = TestRoot::new();
    let config = registry_config(&[]);
    let store = open(&root, &config);
    let image = format!("{REGISTRY_AUTH}/private/busybox:latest");

    let e = timed(store.pull(&image, None)).await.unwrap_err();
    assert!(matches!(e, ImageError::Unauthorized { .. }), "{e}");
    assert_eq!(status_of(&e, "").code(), tonic::Code::Unauthenticated);
    assert!(e.to_string().contains(REGISTRY_AUTH), "{e}");

    let wrong = AuthConfig {
        username: "capstan".into(),
        password: "wrong".into(),
        ..Default::default()
    };
    let e = timed(store.pull(&image, Some(&wrong))).await.unwrap_err();
    assert!(matches!(e, ImageError::Unauthorized { .. }), "{e}");

    let right = AuthConfig {
        username: "capstan".into(),
        password: "s3cret".into(),
        ..Default::default()
    };
    let r = timed(store.pull(&image, Some(&right))).await.unwrap();
    assert_eq!(r.repo_tags, std::slice::from_ref(&image));
    // `auth` = base64("capstan:s3cret"), on a fresh store.
    let root2 = TestRoot::new();
    let store2 = open(&root2, &config);
    let encoded = AuthConfig {
        auth: "Y2Fwc3RhbjpzM2NyZXQ=".into(),
        server_address: REGISTRY_AUTH.into(),
        ..Default::default()
    };
    assert_eq!(
        timed(store2.pull(&image, Some(&encoded))).await.unwrap().id,
        r.id
    );
    // Nothing was left by the failures.
    assert_eq!(store.list().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_auth() {
    ensure_registry();
    let front = Front::start(FrontMode::Bearer).await;
    let root = TestRoot::new();
    let config = registry_config(&[(&front.host(), &format!("http://{}", front.host()))]);
    let store = open(&root, &config);
    let image = format!("{}/library/busybox:latest", front.host());

    let e = timed(store.pull(&image, None)).await.unwrap_err();
    assert!(matches!(e, ImageError::Unauthorized { .. }), "{e}");
    let wrong = AuthConfig {
        username: "capstan".into(),
        password: "nope".into(),
        ..Default::default()
    };
    let e = timed(store.pull(&image, Some(&wrong))).await.unwrap_err();
    assert!(matches!(e, ImageError::Unauthorized { .. }), "{e}");

    let right = AuthConfig {
        username: "capstan".into(),
        password: "s3cret".into(),
        ..Default::default()
    };
    let r = timed(store.pull(&image, Some(&right))).await.unwrap();
    assert!(front.count(|r| r.starts_with("GET /token")) >= 1);
    // A registry token is sent as it is.
    let root2 = TestRoot::new();
    let store2 = open(&root2, &config);
    let token = AuthConfig {
        registry_token: BEARER_TOKEN.into(),
        ..Default::default()
    };
    assert_eq!(
        timed(store2.pull(&image, Some(&token))).await.unwrap().id,
        r.id
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_of_one_image_share_one_download() {
    ensure_registry();
    let front = Front::start(FrontMode::Proxy).await;
    let root = TestRoot::new();
    let config = registry_config(&[(&front.host(), &format!("http://{}", front.host()))]);
    let store = open(&root, &config);
    let image = format!("{}/library/busybox:latest", front.host());
    let pulls: Vec<_> = (0..4)
        .map(|_| {
            let (s, i) = (store.clone(), image.clone());
            tokio::spawn(async move { s.pull(&i, None).await })
        })
        .collect();
    let mut ids = Vec::new();
    for p in pulls {
        ids.push(timed(p).await.unwrap().unwrap().id);
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    let rec = store.get(&ids[0]).unwrap();
    let layer = &rec.layers[0].digest;
    let fetched = front.count(|r| r.starts_with("GET ") && r.ends_with(&format!("/blobs/{layer}")));
    assert_eq!(
        fetched,
        1,
        "the layer was fetched {fetched} times: {:?}",
        front.requests.lock().unwrap()
    );
    assert_eq!(
        front.count(|r| r.starts_with("GET ") && r.contains("/manifests/latest")),
        1,
        "one manifest resolution"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_images_unreachable_registries_and_bad_references() {
    ensure_registry();
    let root = TestRoot::new();
    let config = registry_config(&[("127.0.0.1:1", "http://127.0.0.1:1")]);
    let store = open(&root, &config);

    for missing in [
        format!("{REGISTRY}/library/nope:latest"),
        format!("{REGISTRY}/library/busybox:no-such-tag"),
    ] {
        let e = timed(store.pull(&missing, None)).await.unwrap_err();
        assert!(matches!(e, ImageError::NotFound { .. }), "{missing}: {e}");
        let status = status_of(&e, &format!("failed to pull and unpack image {missing:?}"));
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert!(
            status.message().contains(&missing) && status.message().contains("not found"),
            "{}",
            status.message()
        );
    }

    let e = timed(store.pull("127.0.0.1:1/library/busybox:latest", None))
        .await
        .unwrap_err();
    assert!(matches!(e, ImageError::Unreachable { .. }), "{e}");
    assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
    assert_eq!(status_of(&e, "").code(), tonic::Code::Unavailable);

    let e = timed(store.pull("Not/A Reference", None))
        .await
        .unwrap_err();
    assert_eq!(status_of(&e, "").code(), tonic::Code::InvalidArgument);
    assert!(store.list().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_blobs_are_refused_and_nothing_is_kept() {
    ensure_registry();
    let front = Front::start(FrontMode::Corrupt).await;
    let root = TestRoot::new();
    let config = registry_config(&[(&front.host(), &format!("http://{}", front.host()))]);
    let store = open(&root, &config);
    let e = timed(store.pull(&format!("{}/library/busybox:latest", front.host()), None))
        .await
        .unwrap_err();
    assert!(matches!(e, ImageError::DigestMismatch { .. }), "{e}");
    assert!(e.to_string().contains("sha256:"), "names the digest: {e}");
    assert_eq!(status_of(&e, "").code(), tonic::Code::DataLoss);
    assert!(store.list().is_empty());
    let images = root.path().join("images");
    assert_eq!(count_dir(&images.join("content/blobs/sha256")), 0);
    assert_eq!(count_dir(&images.join("content/ingest")), 0);
    assert_eq!(count_dir(&images.join("snapshots")), 0);
    assert_eq!(count_dir(&images.join("leases")), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malicious_layer_is_refused_end_to_end() {
    ensure_registry();
    let evil = tar_layer(&[
        ("etc/ok", b"fine"),
        ("../../../../tmp/capstan-escaped", b"evil"),
    ]);
    push_image("capstan-test/evil", "1.0", &[evil]).await;
    let root = TestRoot::new();
    let config = registry_config(&[]);
    let store = open(&root, &config);
    let e = timed(store.pull(&format!("{REGISTRY}/capstan-test/evil:1.0"), None))
        .await
        .unwrap_err();
    assert!(matches!(e, ImageError::BadLayer { .. }), "{e}");
    assert!(e.to_string().contains("outside"), "{e}");
    assert_eq!(status_of(&e, "").code(), tonic::Code::InvalidArgument);
    assert!(!std::path::Path::new("/tmp/capstan-escaped").exists());
    assert!(store.list().is_empty());
    assert_eq!(count_dir(&root.path().join("images/snapshots")), 0);
    assert_eq!(
        count_dir(&root.path().join("images/content/blobs/sha256")),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_layers_fit_in_the_overlay_options() {
    ensure_registry();
    let layers: Vec<Vec<u8>> = (0..41)
        .map(|i| {
            let name = format!("layer/{i:02}");
            tar_layer(&[(name.as_str(), format!("layer {i}\n").as_bytes())])
        })
        .collect();
    push_image("capstan-test/deep", "1.0", &layers).await;
    let root = TestRoot::new();
    let config = registry_config(&[]);
    let store = open(&root, &config);
    let r = timed(store.pull(&format!("{REGISTRY}/capstan-test/deep:1.0"), None))
        .await
        .unwrap();
    assert_eq!(r.chain_ids.len(), 41);
    let rootfs = store.prepare_rootfs("deep", &r.id).unwrap();
    assert_eq!(rootfs.lowerdirs.len(), 41);
    let opts = rootfs.mount_options();
    assert!(
        opts.len() < cri::image::MAX_MOUNT_OPTIONS,
        "{} bytes: {opts}",
        opts.len()
    );
    // Top-most first: the last layer's snapshot leads.
    assert!(rootfs.lowerdirs[0].ends_with(format!(
        "{}/fs",
        rootfs.lowerdirs[0]
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
    )));
    let target = root.path().join("mnt");
    std::fs::create_dir_all(&target).unwrap();
    rootfs.mount(&target).unwrap();
    let _m = Mounted(target.clone());
    for i in [0, 20, 40] {
        assert_eq!(
            std::fs::read_to_string(target.join(format!("layer/{i:02}"))).unwrap(),
            format!("layer {i}\n")
        );
    }
}
