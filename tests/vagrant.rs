//! The multi-VM lab's Vagrantfile: `vagrant validate` accepts it with the libvirt provider (the
//! vagrant-libvirt plugin checks every `lv.*` setting) and, provider blocks aside, as plain Vagrant
//! config (VirtualBox is not installable here, and Vagrant refuses to validate for a provider it
//! cannot find); it rejects a broken copy (so the check is real), and the provisioning script it
//! runs parses. Booting the VMs needs a hypervisor
//! this machine lacks (KVM here is software-emulated), so `vagrant up` is not run.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A copy of the Vagrantfile and its provisioning script in a fresh directory, so the `.vagrant`
/// state (machine records, the generated join token) lands there and not in the checkout.
fn copy_lab(vagrantfile: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Vagrantfile"), vagrantfile).unwrap();
    std::fs::create_dir(dir.path().join("lab")).unwrap();
    std::fs::copy(
        repo().join("lab/vagrant-provision.sh"),
        dir.path().join("lab/vagrant-provision.sh"),
    )
    .unwrap();
    dir
}

fn validate(dir: &Path, provider: Option<&str>) -> (bool, String) {
    let mut cmd = Command::new("vagrant");
    cmd.arg("validate");
    match provider {
        Some(provider) => cmd.env("VAGRANT_DEFAULT_PROVIDER", provider),
        None => cmd.arg("--ignore-provider"),
    };
    let out = cmd
        .current_dir(dir)
        .env("VAGRANT_CHECKPOINT_DISABLE", "1")
        .output()
        .expect("vagrant is installed by scripts/install-deps.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_vagrantfile_validates_for_libvirt_and_as_plain_config() {
    let vagrantfile = std::fs::read_to_string(repo().join("Vagrantfile")).unwrap();
    let dir = copy_lab(&vagrantfile);
    for provider in [Some("libvirt"), None] {
        let (ok, text) = validate(dir.path(), provider);
        assert!(ok, "vagrant validate ({provider:?}) failed:\n{text}");
        assert!(text.contains("validated successfully"), "{text}");
    }
    // The join token the Vagrantfile made for the server and agents is a bootstrap token.
    let token = std::fs::read_to_string(dir.path().join(".vagrant/capstan-token")).unwrap();
    let token = token.trim();
    let (id, secret) = token.split_once('.').expect("<id>.<secret>");
    assert_eq!((id.len(), secret.len()), (6, 16), "{token}");
    assert!(token
        .chars()
        .all(|c| c == '.' || c.is_ascii_lowercase() || c.is_ascii_digit()));
}

#[test]
fn a_broken_vagrantfile_is_refused_naming_the_setting() {
    let vagrantfile = std::fs::read_to_string(repo().join("Vagrantfile")).unwrap();
    let broken = vagrantfile.replacen("lv.cpus = cpus", "lv.cpuz = cpus", 1);
    assert_ne!(broken, vagrantfile, "the Vagrantfile sets lv.cpus");
    let dir = copy_lab(&broken);
    let (ok, text) = validate(dir.path(), Some("libvirt"));
    assert!(
        !ok,
        "a misspelt provider setting passed validation:\n{text}"
    );
    assert!(text.contains("cpuz"), "{text}");
}

#[test]
fn the_provisioning_script_parses_and_knows_both_roles() {
    let script = repo().join("lab/vagrant-provision.sh");
    let out = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&script).unwrap();
    for needle in ["capstan server", "server)", "agent)", "--token"] {
        assert!(
            text.contains(needle) || text.contains(&needle.replace("capstan ", "")),
            "the provisioning script lacks {needle:?}"
        );
    }
}
