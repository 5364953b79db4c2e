//! `runtime new`, as a new user outside the repository runs it: the crate it
//! writes builds with nothing but the SDK the binary carries, and runs a
//! job; the README's handler example builds in it and runs too.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use runtime_tests::{Run, TempDir, root, runtime_command};

/// Runs `runtime ARGS` in `dir` with its own cache, as a user would there.
fn runtime_in(dir: &Path, cache: &Path, args: &[&str]) -> Run {
    let output = runtime_command(cache)
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run runtime");
    Run {
        command: format!("runtime {} (in {})", args.join(" "), dir.display()),
        output,
    }
}

/// `cargo build --release --target wasm32-wasip2` in `dir`, into its own
/// `target/`, with none of the settings the cargo running this test passes
/// down: the build must work as it does in a user's shell.
fn cargo_build(dir: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(dir)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let from_outer_build = ["CARGO_BUILD_", "CARGO_PROFILE_", "CARGO_TARGET_"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
            || ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "RUST_BACKTRACE"].contains(&&*name);
        if from_outer_build {
            cmd.env_remove(&*name);
        }
    }
    let output = cmd
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .output()
        .expect("run cargo");
    assert!(
        output.status.success(),
        "cargo build in {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The registry packages a Cargo.lock pins, as (name, version).
fn locked(lockfile: &Path) -> BTreeSet<(String, String)> {
    let text = std::fs::read_to_string(lockfile).expect("read Cargo.lock");
    let lock: toml::Table = text.parse().expect("Cargo.lock is TOML");
    let field = |p: &toml::Value, key: &str| p.get(key).and_then(|v| v.as_str()).map(String::from);
    lock.get("package")
        .and_then(|p| p.as_array())
        .expect("[[package]] entries")
        .iter()
        .filter(|p| p.get("source").is_some())
        .filter_map(|p| Some((field(p, "name")?, field(p, "version")?)))
        .collect()
}

/// The README's handler example: the `rust` block that starts with
/// `// src/lib.rs` under "Writing a handler".
fn readme_handler() -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("read README.md");
    let section = readme
        .split_once("## Writing a handler")
        .map(|(_, after)| after)
        .expect("README.md has a section \"Writing a handler\"");
    let block = section
        .split("```rust\n")
        .skip(1)
        .find(|block| block.starts_with("// src/lib.rs\n"))
        .expect("a ```rust block starting with `// src/lib.rs` under \"Writing a handler\"");
    block
        .split_once("```")
        .map(|(code, _)| code.to_string())
        .expect("the block ends")
}

#[test]
fn a_new_crate_builds_outside_the_repository_and_runs_a_job() {
    let home = TempDir::new("scaffold");
    let cache = home.path().join("cache");
    assert!(
        !home.path().starts_with(root()),
        "the crate must be written outside the repository"
    );

    let new = runtime_in(home.path(), &cache, &["new", "greet"]);
    new.expect_code(0);
    let out = new.stdout();
    assert!(out.contains("cd greet\n"), "{out}");
    assert!(
        out.contains("cargo build --release --target wasm32-wasip2\n"),
        "{out}"
    );
    assert!(
        out.contains(r#"runtime dispatch greet '{"name": "Ada"}'"#),
        "{out}"
    );
    let krate = home.path().join("greet");
    let manifest = std::fs::read_to_string(krate.join("Cargo.toml")).expect("Cargo.toml");
    assert!(manifest.contains(r#"name = "greet-job""#), "{manifest}");
    for file in ["runtime.toml", "src/lib.rs", "guest-sdk/Cargo.toml"] {
        assert!(krate.join(file).is_file(), "{file} is missing");
    }
    let pinned = locked(&krate.join("Cargo.lock"));
    assert!(
        pinned.iter().any(|(name, _)| name == "wit-bindgen"),
        "{pinned:?}"
    );

    cargo_build(&krate);
    // Cargo kept to the versions the binary carries: nothing else to fetch.
    let used = locked(&krate.join("Cargo.lock"));
    let unexpected: Vec<_> = used.difference(&pinned).collect();
    assert!(
        unexpected.is_empty(),
        "cargo chose versions the binary does not carry: {unexpected:?}"
    );
    assert!(
        krate
            .join("target/wasm32-wasip2/release/greet_job.wasm")
            .is_file()
    );

    let run = runtime_in(&krate, &cache, &["dispatch", "greet", r#"{"name": "Ada"}"#]);
    run.expect_code(0);
    let out = run.stdout();
    assert!(
        out.contains("INFO Hello, Ada! (job greet:1, attempt 1 of 4)"),
        "{out}"
    );
    assert!(out.contains("greet:1: done after 1 attempt"), "{out}");

    let run = runtime_in(&krate, &cache, &["dispatch", "greet", r#"{"name": " "}"#]);
    run.expect_code(1);
    let out = run.stdout();
    assert!(out.contains("name must not be empty"), "{out}");
    assert!(out.contains("after 1 attempt"), "{out}");

    // The README's example, as written, in the same crate.
    std::fs::write(krate.join("src/lib.rs"), readme_handler()).expect("write lib.rs");
    cargo_build(&krate);
    let run = runtime_in(&krate, &cache, &["dispatch", "greet", r#"{"name": "Ada"}"#]);
    run.expect_code(0);
    let out = run.stdout();
    assert!(
        out.lines().any(|line| line == "  | INFO Hello, Ada!"),
        "the README's handler did not run: {out}"
    );
}

#[test]
fn a_bad_queue_name_is_refused_and_nothing_is_written() {
    let home = TempDir::new("scaffold-name");
    let run = runtime_in(home.path(), home.path(), &["new", "Greet"]);
    run.expect_code(2);
    let err = run.stderr();
    assert!(err.contains("invalid queue name \"Greet\""), "{err}");
    assert!(err.contains("a-z, 0-9"), "{err}");
    let left: Vec<_> = std::fs::read_dir(home.path())
        .expect("read temp dir")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_non_empty_directory_is_refused_and_left_alone() {
    let home = TempDir::new("scaffold-full");
    let dir = home.path().join("mine");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(dir.join("notes.txt"), "keep me").expect("write");
    let run = runtime_in(home.path(), home.path(), &["new", "greet", "--dir", "mine"]);
    run.expect_code(2);
    let err = run.stderr();
    assert!(err.contains("mine is not empty"), "{err}");
    assert!(err.contains("--dir"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, ["notes.txt"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).expect("read"),
        "keep me"
    );
}

#[test]
fn a_file_where_the_crate_would_go_is_refused() {
    let home = TempDir::new("scaffold-file");
    std::fs::write(home.path().join("greet"), "a file").expect("write");
    let run = runtime_in(home.path(), home.path(), &["new", "greet"]);
    run.expect_code(2);
    let err = run.stderr();
    assert!(err.contains("greet exists and is not a directory"), "{err}");
    assert_eq!(
        std::fs::read_to_string(home.path().join("greet")).expect("read"),
        "a file"
    );
}

#[test]
fn an_empty_directory_is_used() {
    let home = TempDir::new("scaffold-empty");
    let dir = home.path().join("empty");
    std::fs::create_dir(&dir).expect("mkdir");
    let run = runtime_in(&dir, home.path(), &["new", "greet", "--dir", "."]);
    run.expect_code(0);
    assert!(dir.join("Cargo.toml").is_file());
    assert!(dir.join("guest-sdk/src/lib.rs").is_file());
}
