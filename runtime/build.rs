//! Embeds the guest SDK this binary is built with, for `runtime new`: the
//! handler crate it writes carries the SDK as a path dependency, so it
//! builds outside this repository, against the very SDK (and the very
//! dependency versions) this binary was built and tested with.
//!
//! Embedded, generically so that files and dependencies added to the SDK
//! later come along without a change here:
//!
//! - every file under `guest-sdk/src` and `guest-sdk/wit` (`wit/deps/**`
//!   included);
//! - `guest-sdk/Cargo.toml` made standalone: each `workspace = true` field
//!   and dependency resolved from the root `Cargo.toml`'s
//!   `[workspace.package]`, `[workspace.dependencies]` and
//!   `[workspace.lints]`; its dev-dependencies dropped (nobody runs the
//!   SDK's own tests from a handler crate, and in the handler's workspace
//!   they would be resolved and fetched for nothing);
//! - the root `Cargo.lock`'s entries for the SDK and everything it depends
//!   on, so the new crate resolves to the versions built here.
//!
//! The build fails, naming the reason, if the SDK grows something a copy of
//! these files cannot carry (a build script, a path dependency).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("runtime/ sits in the workspace root")
        .to_path_buf();
    let sdk = root.join("guest-sdk");
    // A directory is scanned whole: a file added anywhere under it reruns this.
    println!("cargo:rerun-if-changed={}", sdk.display());
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.toml").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );

    let workspace = read_toml(&root.join("Cargo.toml"));
    let mut manifest = read_toml(&sdk.join("Cargo.toml"));
    if sdk.join("build.rs").exists() || package(&manifest).contains_key("build") {
        fail(
            "guest-sdk has a build script, which `runtime new` does not carry: embed it in runtime/build.rs too",
        );
    }
    standalone(&mut manifest, &workspace);
    let sdk_name = package_str(&manifest, "name");
    let sdk_version = package_str(&manifest, "version");

    let mut files = Vec::new();
    for dir in ["src", "wit"] {
        walk(&sdk, &sdk.join(dir), &mut files);
    }
    files.sort();

    let lock = lock_subset(&read_toml(&root.join("Cargo.lock")), &sdk_name);

    let header = format!(
        "# The guest SDK as `runtime {}` carries it: guest-sdk/Cargo.toml of its\n\
         # repository, with the fields and dependencies it shared with that\n\
         # workspace written in.\n",
        std::env::var("CARGO_PKG_VERSION").expect("set by cargo")
    );
    let manifest_text =
        header + &toml::to_string(&manifest).unwrap_or_else(|e| fail(&format!("{e}")));
    let lock_text = toml::to_string(&lock).unwrap_or_else(|e| fail(&format!("{e}")));

    let mut out = String::new();
    out.push_str(
        "/// The SDK's files under `src/` and `wit/`: (path in the SDK, bytes), sorted.\n\
         pub const SDK_FILES: &[(&str, &[u8])] = &[\n",
    );
    for (relative, absolute) in &files {
        writeln!(out, "    ({relative:?}, include_bytes!({absolute:?})),").expect("to a String");
    }
    out.push_str("];\n");
    writeln!(
        out,
        "/// The SDK's Cargo.toml, standalone.\npub const SDK_MANIFEST: &str = {manifest_text:?};"
    )
    .expect("to a String");
    writeln!(
        out,
        "/// The SDK's package name.\npub const SDK_NAME: &str = {sdk_name:?};\n\
         /// The SDK's version.\npub const SDK_VERSION: &str = {sdk_version:?};"
    )
    .expect("to a String");
    writeln!(
        out,
        "/// Cargo.lock of this build, cut down to the SDK and what it depends on.\n\
         pub const SDK_LOCK: &str = {lock_text:?};"
    )
    .expect("to a String");
    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("guest_sdk.rs");
    std::fs::write(&dest, out).unwrap_or_else(|e| fail(&format!("{}: {e}", dest.display())));
}

fn fail(message: &str) -> ! {
    panic!("embedding the guest SDK: {message}");
}

fn read_toml(path: &Path) -> toml::Table {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", path.display())));
    text.parse()
        .unwrap_or_else(|e| fail(&format!("{} is not valid TOML: {e}", path.display())))
}

fn package(manifest: &toml::Table) -> &toml::Table {
    manifest
        .get("package")
        .and_then(toml::Value::as_table)
        .unwrap_or_else(|| fail("guest-sdk/Cargo.toml has no [package]"))
}

fn package_str(manifest: &toml::Table, key: &str) -> String {
    package(manifest)
        .get(key)
        .and_then(toml::Value::as_str)
        .unwrap_or_else(|| {
            fail(&format!(
                "guest-sdk/Cargo.toml: package.{key} is not a string"
            ))
        })
        .to_string()
}

/// Every file below `dir`, as (path relative to `base` with `/`, absolute
/// path). Symbolic links and names that are not UTF-8 are refused: what
/// they would copy is unclear.
fn walk(base: &Path, dir: &Path, files: &mut Vec<(String, String)>) {
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", dir.display())));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| fail(&format!("reading {}: {e}", dir.display())));
        let path = entry.path();
        let kind = entry
            .file_type()
            .unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
        if kind.is_dir() {
            walk(base, &path, files);
        } else if kind.is_file() {
            let relative = path
                .strip_prefix(base)
                .ok()
                .and_then(|p| {
                    p.components()
                        .map(|c| c.as_os_str().to_str())
                        .collect::<Option<Vec<_>>>()
                })
                .unwrap_or_else(|| fail(&format!("{}: name is not UTF-8", path.display())))
                .join("/");
            let absolute = path
                .to_str()
                .unwrap_or_else(|| fail(&format!("{}: name is not UTF-8", path.display())))
                .to_string();
            files.push((relative, absolute));
        } else {
            fail(&format!(
                "{} is neither a file nor a directory",
                path.display()
            ));
        }
    }
}

/// Resolves what `manifest` inherits from `workspace`, in place.
fn standalone(manifest: &mut toml::Table, workspace: &toml::Table) {
    let shared = |section: &str| -> toml::Table {
        workspace
            .get("workspace")
            .and_then(|w| w.get(section))
            .and_then(toml::Value::as_table)
            .cloned()
            .unwrap_or_default()
    };
    let fields = shared("package");
    let dependencies = shared("dependencies");

    if let Some(package) = manifest
        .get_mut("package")
        .and_then(toml::Value::as_table_mut)
    {
        for (key, value) in package.iter_mut() {
            if inherits(value) {
                *value = fields.get(key).cloned().unwrap_or_else(|| {
                    fail(&format!(
                        "package.{key} inherits from the workspace, whose [workspace.package] does not set it"
                    ))
                });
            }
        }
    }
    if manifest.get("lints").is_some_and(inherits) {
        manifest.insert("lints".into(), toml::Value::Table(shared("lints")));
    }
    manifest.remove("dev-dependencies");
    for section in ["dependencies", "build-dependencies"] {
        if let Some(deps) = manifest
            .get_mut(section)
            .and_then(toml::Value::as_table_mut)
        {
            resolve_dependencies(deps, &dependencies, section);
        }
    }
    if let Some(targets) = manifest
        .get_mut("target")
        .and_then(toml::Value::as_table_mut)
    {
        for (cfg, target) in targets.iter_mut() {
            let Some(target) = target.as_table_mut() else {
                continue;
            };
            target.remove("dev-dependencies");
            for section in ["dependencies", "build-dependencies"] {
                if let Some(deps) = target.get_mut(section).and_then(toml::Value::as_table_mut) {
                    resolve_dependencies(deps, &dependencies, &format!("target.{cfg}.{section}"));
                }
            }
        }
    }
}

/// `{ workspace = true }`, alone or beside a member's own keys.
fn inherits(value: &toml::Value) -> bool {
    value
        .get("workspace")
        .and_then(toml::Value::as_bool)
        .unwrap_or(false)
}

/// Resolves each `workspace = true` dependency as cargo does: the
/// workspace's entry, with the member's `features` added and its
/// `optional` kept. A path dependency is refused: its files are not
/// carried.
fn resolve_dependencies(deps: &mut toml::Table, workspace: &toml::Table, section: &str) {
    for (name, dep) in deps.iter_mut() {
        if inherits(dep) {
            let mut resolved = match workspace.get(name) {
                Some(toml::Value::String(version)) => {
                    let mut table = toml::Table::new();
                    table.insert("version".into(), toml::Value::String(version.clone()));
                    table
                }
                Some(toml::Value::Table(table)) => table.clone(),
                _ => fail(&format!(
                    "{section}.{name} inherits from the workspace, whose [workspace.dependencies] does not have it"
                )),
            };
            if let Some(extra) = dep.get("features").and_then(toml::Value::as_array) {
                let features = resolved
                    .entry("features")
                    .or_insert_with(|| toml::Value::Array(Vec::new()));
                if let Some(features) = features.as_array_mut() {
                    for feature in extra {
                        if !features.contains(feature) {
                            features.push(feature.clone());
                        }
                    }
                }
            }
            if let Some(optional) = dep.get("optional") {
                resolved.insert("optional".into(), optional.clone());
            }
            *dep = toml::Value::Table(resolved);
        }
        if dep.get("path").is_some() {
            fail(&format!(
                "{section}.{name} is a path dependency, which a handler crate outside this repository cannot reach"
            ));
        }
    }
}

/// The lockfile `lock` cut down to the package `root` and everything it
/// depends on (its entries name dependencies as `name`, `name version` or
/// `name version (source)`).
fn lock_subset(lock: &toml::Table, root: &str) -> toml::Table {
    let packages: Vec<&toml::Table> = lock
        .get("package")
        .and_then(toml::Value::as_array)
        .unwrap_or_else(|| fail("Cargo.lock has no [[package]]"))
        .iter()
        .filter_map(toml::Value::as_table)
        .collect();
    let field = |p: &toml::Table, key: &str| {
        p.get(key)
            .and_then(toml::Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let find = |reference: &str| -> usize {
        let mut parts = reference.split(' ');
        let name = parts.next().unwrap_or_default();
        let version = parts.next();
        packages
            .iter()
            .position(|p| {
                field(p, "name") == name && version.is_none_or(|v| field(p, "version") == v)
            })
            .unwrap_or_else(|| fail(&format!("Cargo.lock has no package {reference:?}")))
    };
    let mut keep = BTreeSet::new();
    let mut todo = vec![find(root)];
    while let Some(index) = todo.pop() {
        if !keep.insert(index) {
            continue;
        }
        let deps = packages[index]
            .get("dependencies")
            .and_then(toml::Value::as_array);
        for dep in deps.into_iter().flatten().filter_map(toml::Value::as_str) {
            todo.push(find(dep));
        }
    }
    let mut subset = toml::Table::new();
    if let Some(version) = lock.get("version") {
        subset.insert("version".into(), version.clone());
    }
    subset.insert(
        "package".into(),
        toml::Value::Array(
            keep.into_iter()
                .map(|i| toml::Value::Table(packages[i].clone()))
                .collect(),
        ),
    );
    subset
}
