//! The function library (`library.lua`): loaded once per server with
//! `FUNCTION LOAD` and called with `FCALL`, so the helpers every function
//! shares are defined once per load, not once per call as a script's would
//! be. Loaded again when a call finds it missing (a restarted server
//! without persistence, `FUNCTION FLUSH`, a node added to a cluster).

use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::{Cmd, RedisError, Value};

/// The library's source and the name its functions are registered under.
struct Library {
    /// `runtime_` and the start of the SHA-256 of `library.lua`: a change to
    /// the code is a new library, so two versions of the runtime sharing a
    /// server never call each other's functions.
    name: String,
    source: String,
}

static LIBRARY: LazyLock<Library> = LazyLock::new(|| {
    let body = include_str!("library.lua");
    let version = super::super::module_version(body.as_bytes());
    let name = format!("runtime_{}", &version[..16]);
    let source = format!("#!lua name={name}\nlocal NAME = '{name}'\n{body}");
    Library { name, source }
});

/// The library's functions.
#[derive(Debug, Clone, Copy)]
pub(super) enum Function {
    Dispatch,
    Claim,
    Complete,
    Renew,
    Peek,
    Mark,
    Due,
    Settle,
    Read,
    List,
    Retry,
    Delete,
    Purge,
    Tree,
    Drop,
    Registry,
    Bucket,
    Flight,
    RunTime,
    Throughput,
    Pause,
}

impl Function {
    fn name(self) -> &'static str {
        match self {
            Function::Dispatch => "dispatch",
            Function::Claim => "claim",
            Function::Complete => "complete",
            Function::Renew => "renew",
            Function::Peek => "peek",
            Function::Mark => "mark",
            Function::Due => "due",
            Function::Settle => "settle",
            Function::Read => "read",
            Function::List => "list",
            Function::Retry => "retry",
            Function::Delete => "delete",
            Function::Purge => "purge",
            Function::Tree => "tree",
            Function::Drop => "drop",
            Function::Registry => "registry",
            Function::Bucket => "bucket",
            Function::Flight => "flight",
            Function::RunTime => "runtime",
            Function::Throughput => "throughput",
            Function::Pause => "pause",
        }
    }

    /// `FCALL` of this function on `keys`; the caller adds the arguments.
    pub fn call(self, keys: &[&str]) -> Cmd {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg(format!("{}_{}", LIBRARY.name, self.name()))
            .arg(keys.len())
            .arg(keys);
        cmd
    }
}

/// Runs `cmd` (a [`Function::call`]), loading the library first if the
/// server does not have it.
pub(super) async fn run<C: ConnectionLike>(conn: &mut C, cmd: &Cmd) -> Result<Value, RedisError> {
    match cmd.query_async(conn).await {
        Err(e) if e.to_string().contains("Function not found") => {
            // REPLACE: any number of processes may load the same text at
            // once; on a cluster the client sends it to every primary.
            let _: Value = redis::cmd("FUNCTION")
                .arg("LOAD")
                .arg("REPLACE")
                .arg(&LIBRARY.source)
                .query_async(conn)
                .await?;
            cmd.query_async(conn).await
        }
        reply => reply,
    }
}
