//! The image `make image` builds (an OCI layout under target/image) against the `Dockerfile`:
//! the same final stage (the binary's path, USER, ENTRYPOINT, CMD), one layer holding only a
//! static binary, blobs that match their digests, and a build stage on the Rust version that
//! `Cargo.toml` declares and this toolchain is.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sha2::{Digest, Sha256};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The instructions of the Dockerfile's last stage that make up an image's runtime config.
#[derive(Debug, Default)]
struct FinalStage {
    base: String,
    copied_to: Vec<String>,
    user: Option<String>,
    entrypoint: Option<Value>,
    cmd: Option<Value>,
    /// Instructions of the stage that nothing here compares.
    others: Vec<String>,
}

/// The last stage of a Dockerfile with one instruction per line (continuations joined).
fn final_stage(dockerfile: &str) -> FinalStage {
    let joined = dockerfile.replace("\\\n", " ");
    let mut stage = FinalStage::default();
    for line in joined.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (instruction, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim();
        match instruction.to_ascii_uppercase().as_str() {
            "FROM" => {
                stage = FinalStage {
                    base: rest.split_whitespace().next().unwrap_or_default().into(),
                    ..FinalStage::default()
                }
            }
            "COPY" => {
                let dest = rest.split_whitespace().last().unwrap_or_default();
                stage.copied_to.push(dest.into());
            }
            "USER" => stage.user = Some(rest.into()),
            "ENTRYPOINT" => stage.entrypoint = Some(serde_json::from_str(rest).unwrap()),
            "CMD" => stage.cmd = Some(serde_json::from_str(rest).unwrap()),
            other => stage.others.push(other.into()),
        }
    }
    stage
}

/// A blob of the layout, checked against its digest.
fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    let bytes = std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap();
    assert_eq!(
        format!("{:x}", Sha256::digest(&bytes)),
        hex,
        "blob {digest}"
    );
    bytes
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// Whether an ELF file asks for a program interpreter (a dynamic loader): PT_INTERP.
fn has_interpreter(elf: &[u8]) -> bool {
    assert_eq!(&elf[..5], b"\x7fELF\x02", "a 64-bit ELF file");
    let read = |at: usize, len: usize| {
        let mut bytes = [0u8; 8];
        bytes[..len].copy_from_slice(&elf[at..at + len]);
        u64::from_le_bytes(bytes) as usize
    };
    let (table, entry_size, entries) = (read(0x20, 8), read(0x36, 2), read(0x38, 2));
    (0..entries).any(|i| read(table + i * entry_size, 4) == 3)
}

#[test]
fn the_built_image_has_the_dockerfiles_final_stage_and_a_static_binary_alone() {
    let dockerfile = std::fs::read_to_string(repo("Dockerfile")).unwrap();
    let stage = final_stage(&dockerfile);
    assert_eq!(stage.base, "scratch", "nothing but the binary in the image");
    assert!(
        stage.others.is_empty(),
        "compare {:?} with the image too",
        stage.others
    );
    let [binary] = stage.copied_to.as_slice() else {
        panic!("one COPY in the final stage: {:?}", stage.copied_to);
    };

    let layout = repo("target/image/redis-operator");
    let index = std::fs::read(layout.join("index.json")).unwrap_or_else(|e| {
        panic!(
            "no image at {} ({e}); `make image` builds it",
            layout.display()
        )
    });
    let version = env!("CARGO_PKG_VERSION");
    let index = json(&index);
    let descriptor = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == version)
        .unwrap_or_else(|| panic!("no manifest tagged {version}: {index}"));
    let manifest = json(&blob(&layout, descriptor["digest"].as_str().unwrap()));
    let config = json(&blob(
        &layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    let runtime = &config["config"];
    assert_eq!(runtime["User"].as_str(), stage.user.as_deref(), "USER");
    assert_eq!(
        Some(&runtime["Entrypoint"]),
        stage.entrypoint.as_ref(),
        "ENTRYPOINT"
    );
    assert_eq!(Some(&runtime["Cmd"]), stage.cmd.as_ref(), "CMD");
    assert_eq!(
        runtime["Entrypoint"][0],
        binary.as_str(),
        "the entrypoint is the copied binary"
    );
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");

    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "one layer: {layers:?}");
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let layer_bytes = blob(&layout, layers[0]["digest"].as_str().unwrap());
    let scratch = std::env::temp_dir().join(format!("image-test-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let layer = scratch.join("layer.tar.gz");
    std::fs::write(&layer, layer_bytes).unwrap();
    let listing = Command::new("tar")
        .arg("-tzf")
        .arg(&layer)
        .output()
        .unwrap();
    assert!(listing.status.success(), "{listing:?}");
    let entries: Vec<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .map(|e| e.trim_start_matches("./").trim_end_matches('/').to_owned())
        .filter(|e| !e.is_empty() && e != ".")
        .collect();
    assert_eq!(
        entries,
        [binary.trim_start_matches('/')],
        "the layer holds the binary and nothing else (no shell)"
    );
    let extract = Command::new("tar")
        .arg("-xzf")
        .arg(&layer)
        .arg("-C")
        .arg(&scratch)
        .status()
        .unwrap();
    assert!(extract.success());
    let elf = std::fs::read(scratch.join(binary.trim_start_matches('/'))).unwrap();
    assert!(
        !has_interpreter(&elf),
        "the binary needs a dynamic loader, which the image lacks"
    );
    std::fs::remove_dir_all(&scratch).unwrap();
}

#[test]
fn the_build_stage_uses_the_declared_rust_version_which_is_the_tested_toolchain() {
    let declared = env!("CARGO_PKG_RUST_VERSION");
    let dockerfile = std::fs::read_to_string(repo("Dockerfile")).unwrap();
    let build_image = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("FROM rust:"))
        .expect("a rust build stage");
    assert!(
        build_image.starts_with(&format!("{declared}.")),
        "the Dockerfile builds with rust:{build_image}, Cargo.toml declares {declared}"
    );
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(
        version.starts_with(&format!("rustc {declared}.")),
        "the tests run on {version}; Cargo.toml declares {declared}: make them agree"
    );
}

#[test]
fn a_stage_is_read_as_its_instructions_and_a_dynamic_binary_is_recognised() {
    let stage = final_stage(
        "FROM rust AS build\nRUN a \\\n  b\nFROM scratch\n# x\nCOPY --from=build /a /b\nUSER 1:2\nENTRYPOINT [\"/b\"]\nCMD [\"run\", \"-v\"]\n",
    );
    assert_eq!(stage.base, "scratch");
    assert_eq!(stage.copied_to, ["/b"]);
    assert_eq!(stage.user.as_deref(), Some("1:2"));
    assert_eq!(stage.cmd, Some(serde_json::json!(["run", "-v"])));
    assert!(stage.others.is_empty());
    assert_eq!(
        final_stage("FROM scratch\nWORKDIR /x\n").others,
        ["WORKDIR"]
    );
    let own = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    // Test binaries are linked dynamically, the image's binary statically.
    assert!(has_interpreter(&own));
}
