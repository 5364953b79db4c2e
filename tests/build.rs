//! Builds the guest modules the tests run, for wasm32-wasip2, each
//! workspace into its own target dir (a nested cargo on the outer target
//! dir would wait forever on its lock), and emits a constant per hostile
//! fixture. Fails if a fixture is used by no test.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest
        .parent()
        .expect("tests/ sits in the workspace root")
        .to_path_buf();
    let guests = manifest.join("guests");
    let jobs = root.join("jobs");
    for dir in [&guests, &jobs, &root.join("guest-sdk")] {
        println!(
            "cargo:rerun-if-changed={}",
            dir.join("Cargo.toml").display()
        );
        println!("cargo:rerun-if-changed={}", dir.join("src").display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        root.join("guest-sdk/wit").display()
    );

    let mut fixtures = Vec::new();
    for entry in std::fs::read_dir(&guests).expect("tests/guests exists") {
        let path = entry.expect("readable dir").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if let Some(queue) = name.strip_suffix("-job") {
            println!("cargo:rerun-if-changed={}", path.join("src").display());
            fixtures.push(queue.to_string());
        }
    }
    for dir in std::fs::read_dir(&jobs).expect("jobs exists").flatten() {
        if dir.path().join("src").is_dir() {
            println!(
                "cargo:rerun-if-changed={}",
                dir.path().join("src").display()
            );
        }
    }
    fixtures.sort();

    let guests_out = build(&guests);
    let jobs_out = build(&jobs);

    let mut consts = String::new();
    consts.push_str(&format!(
        "/// Directory of the built hostile fixtures.\npub const DIR: &str = {:?};\n",
        guests_out.display().to_string()
    ));
    consts.push_str(&format!(
        "/// Directory of the built example jobs.\npub const JOBS_DIR: &str = {:?};\n",
        jobs_out.display().to_string()
    ));
    consts.push_str(&format!(
        "/// Directory of the Python and JavaScript handlers built by scripts/foreign.sh.\npub const FOREIGN_DIR: &str = {:?};\n",
        manifest.join("foreign/target/wasm").display().to_string()
    ));
    let tests_src = read_tests(&manifest.join("tests")) + &read_tests(&manifest.join("benches"));
    println!(
        "cargo:rerun-if-changed={}",
        manifest.join("tests").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        manifest.join("benches").display()
    );
    for queue in &fixtures {
        let ident = queue.to_uppercase().replace('-', "_");
        if !tests_src.contains(&format!("guests::{ident}")) {
            panic!(
                "fixture tests/guests/{queue}-job is not used by any test (use guests::{ident})"
            );
        }
        consts.push_str(&format!(
            "/// Queue served by tests/guests/{queue}-job.\npub const {ident}: &str = {queue:?};\n"
        ));
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("guests.rs");
    std::fs::write(out, consts).expect("write guests.rs");
}

/// `cargo build --release --target wasm32-wasip2` in `dir`; returns the
/// directory of the built `.wasm` files.
fn build(dir: &Path) -> PathBuf {
    let target_dir = dir.join("target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(dir)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir)
        // Flags meant for the host build must not leak into the guests'.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_PROFILE_RELEASE_DEBUG")
        .status()
        .expect("run cargo for the guests");
    assert!(
        status.success(),
        "building the guests in {} failed; is the target installed? (rustup target add wasm32-wasip2)",
        dir.display()
    );
    target_dir.join("wasm32-wasip2").join("release")
}

fn read_tests(dir: &Path) -> String {
    let mut all = String::new();
    for entry in std::fs::read_dir(dir)
        .expect("tests/tests exists")
        .flatten()
    {
        if entry.path().extension().is_some_and(|e| e == "rs") {
            all.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    all
}
