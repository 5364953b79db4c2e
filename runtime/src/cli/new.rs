//! `runtime new QUEUE`: writes a handler crate for a queue that builds
//! anywhere, with the guest SDK this binary carries (see `build.rs`) inside
//! it as a path dependency.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use runtime::QueueName;

use super::{CliResult, Exit};

/// What `build.rs` embedded: the guest SDK's files, its standalone
/// manifest and its part of this build's lockfile.
mod embedded {
    include!(concat!(env!("OUT_DIR"), "/guest_sdk.rs"));
}

/// Write a handler crate for QUEUE, with the guest SDK inside it: it builds
/// anywhere, and `runtime dispatch QUEUE` run in its directory runs it.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The queue the handler serves.
    queue: QueueName,
    /// Where to write the crate: a new or empty directory. Default: ./QUEUE.
    #[arg(long, value_name = "PATH")]
    dir: Option<PathBuf>,
}

/// The version of the crates this command writes.
const CRATE_VERSION: &str = "0.1.0";

/// Cargo builds every artifact of a wasm32-wasip2 release build here, below
/// the crate (unless `CARGO_TARGET_DIR` says otherwise).
const TARGET_DIR: &str = "target/wasm32-wasip2/release";

const LIB_RS: &str = r#"//! The handler of queue `__QUEUE__`: greets whoever the payload names.
//!
//! ```text
//! cargo build --release --target wasm32-wasip2
//! runtime dispatch __QUEUE__ '{"name": "Ada"}'
//! ```

use guest_sdk::{Job, info};
use serde::Deserialize;

/// The payload. One that does not deserialize into it fails the job at
/// once (`invalid payload: ...`): retrying would not fix it.
#[derive(Deserialize)]
struct Greeting {
    name: String,
}

fn handle(job: Job<Greeting>) -> guest_sdk::Result {
    let name = job.payload.name.trim();
    if name.is_empty() {
        // Final: no retry would make the name appear.
        return Err(guest_sdk::fail("name must not be empty"));
    }
    // Lines logged go to the job's log: `runtime dispatch` prints them.
    info!(
        "Hello, {name}! (job {}, attempt {} of {})",
        job.id, job.attempt, job.max_attempts
    );
    Ok(())
}

guest_sdk::export_handler!(handle);
"#;

const CARGO_TOML: &str = r#"[package]
name = "__PACKAGE__"
version = "__CRATE_VERSION__"
edition = "2024"
publish = false

# The handler of queue `__QUEUE__`: `cargo build --release --target wasm32-wasip2`
# writes __TARGET_DIR__/__MODULE__.
[lib]
crate-type = ["cdylib"]

[dependencies]
# The guest SDK as `runtime __RUNTIME_VERSION__` carries it.
guest-sdk = { path = "guest-sdk" }
serde = { version = "1", features = ["derive"] }
serde_json = "1"

[profile.release]
# Small, fast-to-instantiate modules.
opt-level = "s"
lto = true
codegen-units = 1
strip = true

# A workspace of its own, so the crate never joins one it sits inside.
[workspace]
"#;

const RUNTIME_TOML: &str = r#"# How `runtime` runs queue `__QUEUE__` from this directory:
#   cargo build --release --target wasm32-wasip2
#   runtime dispatch __QUEUE__ '{"name": "Ada"}'
handlers = "__TARGET_DIR__"

# Addresses handlers may reach although they are loopback, private,
# link-local, unique-local or multicast (all refused by default):
# [sandbox]
# allow_private_networks = ["10.1.2.3/32"]

[queues.__QUEUE__]
__MODULE_LINE__# Limits of each attempt (the defaults):
# timeout_ms = 30000           # wall-clock time
# memory_mib = 64              # linear memory
# output_kib = 64              # log, stdout and stderr kept
# max_dispatches = 100         # follow-up jobs dispatched
# fuel = 1000000               # instructions, roughly; unset: none (any fuel slows all guests a little)

# Outbound HTTP (wasi:http): none unless listed here. Each entry is
# scheme://host[:port]; `*.example.com` matches its subdomains, not
# example.com itself. Redirects are not followed: a 3xx reaches the handler.
# allowed_outbound_hosts = ["https://api.example.com", "https://*.example.com:8443"]
# http_timeout_ms = 10000      # connect, first byte, between bytes; never past the job's timeout
# http_max_response_kib = 1024 # largest response body
# http_max_requests = 20       # requests per attempt

# Environment variables the handler sees (std::env::var); none by default.
# A value is text, or { from_env = "NAME" }: read from the environment of
# the `runtime` process, so a secret stays out of this file.
# [queues.__QUEUE__.env]
# API_URL = "https://api.example.com/v1/send"
# API_KEY = { from_env = "API_KEY" }

# Directories the handler may read (never write): path in the handler =
# directory here. None by default.
# [queues.__QUEUE__.files]
# "/templates" = "./templates"
"#;

const README_MD: &str = r#"# __PACKAGE__

The handler of queue `__QUEUE__` for `runtime`, the WebAssembly-sandboxed job
executor: `src/lib.rs`.

```sh
rustup target add wasm32-wasip2        # once
cargo build --release --target wasm32-wasip2
runtime check __TARGET_DIR__/__MODULE__
runtime dispatch __QUEUE__ '{"name": "Ada"}'
```

`runtime.toml` points `runtime`, run from this directory, at the built
module, and lists (commented out) the queue's limits and what its handler
may reach: hosts over HTTP, environment variables, directories.

`guest-sdk/` is the guest SDK as `runtime __RUNTIME_VERSION__` carries it, and
`Cargo.lock` pins the versions of its dependencies that `runtime` was built
with. To move to the SDK of another `runtime`, put the `guest-sdk/` that
`runtime new` of that version writes in place of this one. The SDK's
documentation: `cargo doc -p guest-sdk --open`.
"#;

pub fn run(args: &Args) -> CliResult {
    let queue = &args.queue;
    if !queue.tenant().is_default() {
        bail!(
            "a handler crate belongs to no tenant: give the queue's own name (`runtime new {}`), and serve it in a tenant from that tenant's handlers directory or with `runtime deploy {queue}`",
            queue.name()
        );
    }
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(queue.as_str()));
    refuse_unless_empty(&dir)?;
    let names = Names::of(queue);
    let fill = |template: &str| {
        template
            .replace("__QUEUE__", queue.as_str())
            .replace("__PACKAGE__", &names.package)
            .replace("__MODULE__", &names.module)
            .replace("__TARGET_DIR__", TARGET_DIR)
            .replace("__CRATE_VERSION__", CRATE_VERSION)
            .replace("__RUNTIME_VERSION__", env!("CARGO_PKG_VERSION"))
            .replace("__MODULE_LINE__", &names.module_line())
    };
    let mut files: Vec<(PathBuf, Vec<u8>)> = vec![
        ("Cargo.toml".into(), fill(CARGO_TOML).into_bytes()),
        ("Cargo.lock".into(), lockfile(&names.package)?.into_bytes()),
        ("src/lib.rs".into(), fill(LIB_RS).into_bytes()),
        ("runtime.toml".into(), fill(RUNTIME_TOML).into_bytes()),
        ("README.md".into(), fill(README_MD).into_bytes()),
        (".gitignore".into(), b"/target\n".to_vec()),
        (
            "guest-sdk/Cargo.toml".into(),
            embedded::SDK_MANIFEST.as_bytes().to_vec(),
        ),
    ];
    files.extend(
        embedded::SDK_FILES
            .iter()
            .map(|(path, bytes)| (Path::new("guest-sdk").join(path), bytes.to_vec())),
    );
    write_all(&dir, &files)?;

    let shown = shell_word(&dir.display().to_string());
    outln!(
        "wrote {shown}: crate {}, the handler of queue {queue}, with {} {} inside",
        names.package,
        embedded::SDK_NAME,
        embedded::SDK_VERSION
    );
    outln!();
    outln!("next:");
    if dir != Path::new(".") {
        outln!("  cd {shown}");
    }
    outln!("  rustup target add wasm32-wasip2   # once");
    outln!("  cargo build --release --target wasm32-wasip2");
    outln!("  runtime dispatch {queue} '{{\"name\": \"Ada\"}}'");
    Ok(Exit::Ok)
}

/// The crate's package name and module file for a queue.
#[derive(Debug, PartialEq, Eq)]
struct Names {
    package: String,
    module: String,
    /// Whether the module's name departs from the naming rule, so the
    /// config must name it.
    mapped: bool,
}

impl Names {
    /// `<queue>-job`, whose module is `<queue>_job.wasm` (the naming rule).
    /// A package name cannot start with a digit: queue `1st` gets
    /// `job-1st`, with the module named in the config.
    fn of(queue: &QueueName) -> Self {
        if queue.as_str().starts_with(|c: char| c.is_ascii_digit()) {
            Names {
                package: format!("job-{queue}"),
                module: format!("job_{}.wasm", queue.as_str().replace('-', "_")),
                mapped: true,
            }
        } else {
            Names {
                package: format!("{queue}-job"),
                module: queue.handler_file_name(),
                mapped: false,
            }
        }
    }

    /// The config's `module` line, when the naming rule does not find it.
    fn module_line(&self) -> String {
        if self.mapped {
            format!(
                "# A crate's name cannot start with a digit, so the module is named here.\nmodule = \"{TARGET_DIR}/{}\"\n\n",
                self.module
            )
        } else {
            String::new()
        }
    }
}

/// Refuses a directory that has anything in it, or a path that is not a
/// directory: `runtime new` never overwrites.
fn refuse_unless_empty(dir: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{} is not empty: runtime new writes only into a new or empty directory; pick another with --dir",
                    dir.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => bail!(
            "{} exists and is not a directory: pick another path with --dir",
            dir.display()
        ),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", dir.display())),
    }
}

/// Writes `files` below `dir`, each created new: a file that appeared
/// meanwhile is left alone, and the command stops there.
fn write_all(dir: &Path, files: &[(PathBuf, Vec<u8>)]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (relative, bytes) in files {
        let path = dir.join(relative);
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
            })
            .and_then(|mut file| file.write_all(bytes));
        written.with_context(|| {
            format!(
                "cannot write {}; remove {} and run runtime new again",
                path.display(),
                dir.display()
            )
        })?;
    }
    Ok(())
}

/// The new crate's Cargo.lock: this build's entries for the SDK and its
/// dependencies, and one for the crate itself naming the SDK and the
/// `serde` and `serde_json` the SDK was built with, so cargo keeps to
/// those versions (it drops what the crate turns out not to need).
fn lockfile(package: &str) -> anyhow::Result<String> {
    let broken = "the guest SDK's lockfile embedded in this binary is broken";
    let lock: toml::Table = embedded::SDK_LOCK.parse().context(broken)?;
    let sdk_dependencies = lock
        .get("package")
        .and_then(toml::Value::as_array)
        .and_then(|packages| {
            packages
                .iter()
                .find(|p| p.get("name").and_then(toml::Value::as_str) == Some(embedded::SDK_NAME))
        })
        .and_then(|sdk| sdk.get("dependencies"))
        .and_then(toml::Value::as_array)
        .context(broken)?;
    let mut dependencies = vec![toml::Value::from(embedded::SDK_NAME)];
    dependencies.extend(
        sdk_dependencies
            .iter()
            .filter(|d| {
                d.as_str()
                    .and_then(|d| d.split(' ').next())
                    .is_some_and(|name| name == "serde" || name == "serde_json")
            })
            .cloned(),
    );
    // The crate's entry goes last: another `[[package]]` of the same array.
    let mut root = toml::Table::new();
    root.insert("name".into(), package.into());
    root.insert("version".into(), CRATE_VERSION.into());
    root.insert("dependencies".into(), toml::Value::Array(dependencies));
    let mut entry = toml::Table::new();
    entry.insert(
        "package".into(),
        toml::Value::Array(vec![toml::Value::Table(root)]),
    );
    let entry = toml::to_string(&entry).context(broken)?;
    Ok(format!(
        "# This file is automatically @generated by Cargo.\n# It is not intended for manual editing.\n{}\n{entry}",
        embedded::SDK_LOCK
    ))
}

/// `text` as one shell word, quoted only when it needs to be.
fn shell_word(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@".contains(&b));
    if plain {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(name: &str) -> QueueName {
        QueueName::new(name).expect("valid queue name")
    }

    #[test]
    fn a_queue_gets_the_crate_the_naming_rule_finds() {
        let names = Names::of(&queue("send-email"));
        assert_eq!(names.package, "send-email-job");
        assert_eq!(names.module, "send_email_job.wasm");
        assert_eq!(names.module_line(), "");
    }

    #[test]
    fn a_queue_starting_with_a_digit_gets_a_valid_crate_name_and_a_mapped_module() {
        let names = Names::of(&queue("1st-pass"));
        assert_eq!(names.package, "job-1st-pass");
        assert_eq!(names.module, "job_1st_pass.wasm");
        let config = RUNTIME_TOML
            .replace("__QUEUE__", "1st-pass")
            .replace("__TARGET_DIR__", TARGET_DIR)
            .replace("__MODULE_LINE__", &names.module_line());
        let config = runtime::config::Config::parse(&config).expect("the written config parses");
        assert_eq!(
            config.queue(&queue("1st-pass")).module,
            Some(PathBuf::from(
                "target/wasm32-wasip2/release/job_1st_pass.wasm"
            ))
        );
    }

    #[test]
    fn the_written_config_parses_and_points_at_the_build() {
        let config = RUNTIME_TOML
            .replace("__QUEUE__", "greet")
            .replace("__TARGET_DIR__", TARGET_DIR)
            .replace("__MODULE_LINE__", "");
        let config = runtime::config::Config::parse(&config).expect("the written config parses");
        assert_eq!(config.handlers, Some(PathBuf::from(TARGET_DIR)));
        assert_eq!(config.queue(&queue("greet")).module, None);
    }

    #[test]
    fn the_lockfile_names_the_crate_and_the_sdk_with_its_serde() {
        let lock: toml::Table = lockfile("greet-job")
            .expect("lockfile")
            .parse()
            .expect("valid TOML");
        let packages = lock["package"].as_array().expect("packages");
        let root = packages.last().expect("the crate's entry");
        assert_eq!(root["name"].as_str(), Some("greet-job"));
        let deps: Vec<&str> = root["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .filter_map(toml::Value::as_str)
            .collect();
        assert_eq!(deps.first(), Some(&"guest-sdk"));
        assert!(deps.iter().any(|d| d.starts_with("serde")), "{deps:?}");
        assert!(
            packages
                .iter()
                .any(|p| p["name"].as_str() == Some("wit-bindgen")),
            "the SDK's dependencies are locked"
        );
    }

    #[test]
    fn the_sdk_carries_its_sources_and_its_world() {
        let paths: Vec<&str> = embedded::SDK_FILES.iter().map(|(p, _)| *p).collect();
        assert!(paths.contains(&"src/lib.rs"), "{paths:?}");
        assert!(paths.contains(&"wit/handler.wit"), "{paths:?}");
        let manifest: toml::Table = embedded::SDK_MANIFEST.parse().expect("valid TOML");
        assert!(
            !inherits_anything(&toml::Value::Table(manifest)),
            "{}",
            embedded::SDK_MANIFEST
        );
    }

    /// Whether a `workspace` key is left anywhere in `value`.
    fn inherits_anything(value: &toml::Value) -> bool {
        match value {
            toml::Value::Table(table) => table
                .iter()
                .any(|(key, value)| key == "workspace" || inherits_anything(value)),
            toml::Value::Array(items) => items.iter().any(inherits_anything),
            _ => false,
        }
    }

    #[test]
    fn paths_are_quoted_for_the_shell_only_when_needed() {
        assert_eq!(shell_word("greet"), "greet");
        assert_eq!(shell_word("/tmp/a-b/c_d.e"), "/tmp/a-b/c_d.e");
        assert_eq!(shell_word("my dir"), "'my dir'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }
}
