//! The image store's life beyond a pull, as root against the local registry: removal while a
//! container uses the layers, restart (drop and reopen) with crash leftovers, imports from
//! tarballs while a store is open, and the CRI ImageService answers.

mod image_support;

use std::sync::Arc;
use std::time::Duration;

use cri::image::{ImageStore, Rootfs};
use cri::pb;
use cri::pb::image_service_server::ImageService;
use image_support::*;
use tonic::Request;

async fn timed<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .expect("did not finish within 120 s")
}

fn count_dir(p: &std::path::Path) -> usize {
    std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0)
}

fn spec(image: &str) -> Option<pb::ImageSpec> {
    Some(pb::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_an_image_keeps_a_prepared_rootfs_usable() {
    ensure_registry();
    let root = TestRoot::new();
    let config = registry_config(&[]);
    let store = ImageStore::open(root.path(), Some(config.path().into())).unwrap();
    let r = timed(store.pull("busybox", None)).await.unwrap();
    let rootfs = store.prepare_rootfs("c1", "busybox").unwrap();
    assert!(matches!(
        store.prepare_rootfs("c1", &r.id),
        Err(cri::image::ImageError::AlreadyExists(_))
    ));
    assert!(store.remove("busybox").unwrap());
    assert!(store.get(&r.id).is_none());
    assert!(!store.remove("busybox").unwrap(), "absent is not an error");
    // The layer stays for the container.
    let target = root.path().join("mnt");
    std::fs::create_dir_all(&target).unwrap();
    rootfs.mount(&target).unwrap();
    {
        let _m = Mounted(target.clone());
        assert!(target.join("bin/busybox").is_file());
    }
    Rootfs::unmount(&target).unwrap();
    store.remove_rootfs("c1").unwrap();
    store.remove_rootfs("c1").unwrap();
    let images = root.path().join("images");
    assert_eq!(count_dir(&images.join("snapshots")), 0, "layers collected");
    assert_eq!(count_dir(&images.join("content/blobs/sha256")), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_and_snapshots_survive_a_restart_and_crash_leftovers_go() {
    ensure_registry();
    let root = TestRoot::new();
    let config = registry_config(&[]);
    let (id, rootfs) = {
        let store = ImageStore::open(root.path(), Some(config.path().into())).unwrap();
        let r = timed(store.pull("busybox", None)).await.unwrap();
        (r.id.clone(), store.prepare_rootfs("c1", &r.id).unwrap())
    };
    // What a crash could leave: a half-unpacked snapshot, an ingest file of a dead writer, a
    // temporary record and a lease nobody holds.
    let images = root.path().join("images");
    std::fs::create_dir_all(images.join("snapshots/9999/fs/etc")).unwrap();
    std::fs::write(images.join("snapshots/9999/lease"), "1-1").unwrap();
    std::fs::write(
        images.join(format!("content/ingest/{}-999999-0", "a".repeat(64))),
        b"partial",
    )
    .unwrap();
    std::fs::write(images.join("meta/abc.tmp-1"), b"{").unwrap();
    std::fs::write(images.join("leases/1-1"), b"{}").unwrap();

    let store = ImageStore::open(root.path(), Some(config.path().into())).unwrap();
    let r = store.get("busybox").expect("the image is back");
    assert_eq!(r.id, id);
    assert_eq!(store.rootfs("c1"), Some(rootfs.clone()));
    assert!(!images.join("snapshots/9999").exists());
    assert_eq!(count_dir(&images.join("content/ingest")), 0);
    assert!(!images.join("meta/abc.tmp-1").exists());
    assert!(!images.join("leases/1-1").exists());
    // The snapshot is reused, not unpacked again.
    let again = timed(store.pull("busybox", None)).await.unwrap();
    assert_eq!(again.id, id);
    assert_eq!(count_dir(&images.join("snapshots")), 2, "one layer + c1");
    let target = root.path().join("mnt");
    std::fs::create_dir_all(&target).unwrap();
    rootfs.mount(&target).unwrap();
    let _m = Mounted(target.clone());
    assert!(target.join("bin/sh").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_are_seen_by_a_running_store() {
    ensure_registry();
    let root = TestRoot::new();
    let running = ImageStore::open(root.path(), None).unwrap();
    assert!(running.list().is_empty());
    let dir = std::path::Path::new(TEST_DIR);
    let names = cri::image::import_files(
        root.path(),
        &[dir.join("busybox-oci.tar"), dir.join("busybox-docker.tar")],
    )
    .unwrap();
    assert_eq!(
        names,
        [
            "docker.io/library/busybox:latest",
            "docker.io/library/busybox:latest"
        ]
    );
    // The other handle (as `capstan cri` would hold it) sees the result.
    let r = running.get("busybox").expect("imported image visible");
    assert_eq!(r.repo_tags, ["docker.io/library/busybox:latest"]);
    assert_eq!(r.chain_ids.len(), 1);
    let rootfs = running.prepare_rootfs("c1", "busybox").unwrap();
    let target = root.path().join("mnt");
    std::fs::create_dir_all(&target).unwrap();
    rootfs.mount(&target).unwrap();
    let _m = Mounted(target.clone());
    assert!(target.join("bin/busybox").is_file());
    // The same image id as a pull of it gives.
    let config = registry_config(&[]);
    let puller = TestRoot::new();
    let pulled = ImageStore::open(puller.path(), Some(config.path().into())).unwrap();
    assert_eq!(timed(pulled.pull("busybox", None)).await.unwrap().id, r.id);

    let garbage = root.path().join("garbage.tar");
    std::fs::write(&garbage, b"not a tarball at all").unwrap();
    let e = cri::image::import_files(root.path(), &[garbage]).unwrap_err();
    assert!(e.to_string().contains("garbage.tar"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cri_image_service_answers_as_containerd_does() {
    ensure_registry();
    let root = TestRoot::new();
    let config = registry_config(&[]);
    let store: Arc<ImageStore> = ImageStore::open(root.path(), Some(config.path().into())).unwrap();

    let status = store
        .image_status(Request::new(pb::ImageStatusRequest {
            image: spec("busybox"),
            verbose: false,
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(status.image.is_none(), "missing: an empty answer, no error");

    let pulled = timed(store.pull_image(Request::new(pb::PullImageRequest {
        image: spec("busybox"),
        auth: None,
        sandbox_config: None,
    })))
    .await
    .unwrap()
    .into_inner();
    assert!(pulled.image_ref.starts_with("sha256:"));

    let status = store
        .image_status(Request::new(pb::ImageStatusRequest {
            image: spec(&pulled.image_ref[7..19]),
            verbose: true,
        }))
        .await
        .unwrap()
        .into_inner();
    let image = status.image.expect("found by short id");
    assert_eq!(image.id, pulled.image_ref);
    assert_eq!(image.repo_tags, ["docker.io/library/busybox:latest"]);
    let info: serde_json::Value = serde_json::from_str(&status.info["info"]).unwrap();
    assert_eq!(info["imageSpec"]["config"]["Cmd"][0], "sh");

    let all = store
        .list_images(Request::new(pb::ListImagesRequest { filter: None }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.images.len(), 1);
    let filtered = store
        .list_images(Request::new(pb::ListImagesRequest {
            filter: Some(pb::ImageFilter {
                image: spec("nothing-like-this"),
            }),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(filtered.images.is_empty());

    let fs = store
        .image_fs_info(Request::new(pb::ImageFsInfoRequest {}))
        .await
        .unwrap()
        .into_inner();
    let usage = &fs.image_filesystems[0];
    assert!(usage.used_bytes.as_ref().unwrap().value > 1_000_000);
    assert!(usage.inodes_used.as_ref().unwrap().value > 10);
    assert!(usage
        .fs_id
        .as_ref()
        .unwrap()
        .mountpoint
        .ends_with("/images"));

    let err = timed(store.pull_image(Request::new(pb::PullImageRequest {
        image: spec(&format!("{REGISTRY}/library/absent:1")),
        auth: None,
        sandbox_config: None,
    })))
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{}", err.message());
    assert!(
        err.message()
            .starts_with("failed to pull and unpack image \"127.0.0.1:5000/library/absent:1\""),
        "{}",
        err.message()
    );

    for _ in 0..2 {
        store
            .remove_image(Request::new(pb::RemoveImageRequest {
                image: spec("busybox"),
            }))
            .await
            .unwrap();
    }
    assert!(store.list().is_empty());
}
