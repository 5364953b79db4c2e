//! Real `redis-server` processes for tests: each in its own temp dir on a
//! private port (and unix socket), killed when dropped, and in any case
//! when the test process exits (a watcher shell ends it), so a failed or
//! aborted test leaves nothing running.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::TempDir;

/// One redis-server.
#[derive(Debug)]
pub struct RedisServer {
    dir: TempDir,
    port: u16,
    extra: Vec<String>,
    watcher: Option<Child>,
}

/// A free loopback port whose cluster bus port (+10000) is free too.
fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind a free port");
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

fn redis_server_bin() -> &'static str {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "redis-server is not installed: run scripts/setup.sh (it installs it) or `apt-get install redis-server`"
    );
    "redis-server"
}

impl RedisServer {
    /// A server without persistence.
    pub fn start() -> Self {
        Self::start_with(&["--save", "", "--appendonly", "no"])
    }

    /// A server with extra config arguments (`--name value` pairs).
    pub fn start_with(extra: &[&str]) -> Self {
        let mut server = RedisServer {
            dir: TempDir::new("redis"),
            port: free_port(),
            extra: extra.iter().map(|s| (*s).to_string()).collect(),
            watcher: None,
        };
        server.launch();
        server
    }

    fn launch(&mut self) {
        let bin = redis_server_bin();
        let dir = self.dir.path().display().to_string();
        let mut args: Vec<String> = vec![
            "--port".into(),
            self.port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--unixsocket".into(),
            self.socket().display().to_string(),
            "--dir".into(),
            dir.clone(),
            "--logfile".into(),
            format!("{dir}/redis.log"),
        ];
        args.extend(self.extra.iter().cloned());
        // The shell starts the server, records its pid, and kills it when
        // the test process is gone.
        let script = format!(
            "{bin} \"$@\" & r=$!; echo $r > {dir}/pid; \
             while kill -0 {parent} 2>/dev/null && kill -0 $r 2>/dev/null; do sleep 0.2; done; \
             kill -9 $r 2>/dev/null",
            parent = std::process::id()
        );
        let watcher = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.watcher = Some(watcher);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(reply) = self.command(&["PING"])
                && reply == "+PONG"
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not start; its log:\n{}",
                self.port,
                std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// SETs a second this server answers: `redis-benchmark -t set` with
    /// `clients` connections, `pipeline` commands per round trip and
    /// `requests` in all. What a benchmark puts its own figures beside.
    pub fn benchmark_set(&self, clients: usize, pipeline: usize, requests: usize) -> f64 {
        let out = Command::new("redis-benchmark")
            .args(["-p", &self.port().to_string(), "-t", "set", "-q"])
            .args(["-c", &clients.to_string()])
            .args(["-P", &pipeline.to_string()])
            .args(["-n", &requests.to_string()])
            .output()
            .expect("run redis-benchmark (installed with redis-server)");
        let text = String::from_utf8_lossy(&out.stdout);
        // "SET: 1234567.00 requests per second, p50=..." (after \r progress lines)
        text.rsplit("SET: ")
            .next()
            .and_then(|s| s.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("cannot read redis-benchmark's output: {text}"))
    }

    /// Its data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its unix socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `redis+unix://<socket>`.
    pub fn unix_url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    /// Sends one command (inline protocol) and returns the first line of
    /// the reply, e.g. `+PONG`, `:3`, `$5`.
    pub fn command(&self, args: &[&str]) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut request = format!("*{}\r\n", args.len());
        for a in args {
            request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        stream.write_all(request.as_bytes())?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line)?;
        Ok(line.trim_end().to_string())
    }

    /// Sends one command and returns every string of its reply: the
    /// members of an array of bulk strings (`KEYS`, `HKEYS`), or the one
    /// string of a bulk reply (`HGET`; nothing for a nil).
    pub fn strings(&self, args: &[&str]) -> std::io::Result<Vec<String>> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut request = format!("*{}\r\n", args.len());
        for a in args {
            request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        stream.write_all(request.as_bytes())?;
        let mut reader = BufReader::new(stream);
        let bad = |what: String| std::io::Error::other(format!("{args:?}: {what}"));
        let header = |reader: &mut BufReader<TcpStream>| -> std::io::Result<(char, i64)> {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let line = line.trim_end();
            let kind = line.chars().next().ok_or_else(|| bad("no reply".into()))?;
            let n = line[1..]
                .parse()
                .map_err(|_| bad(format!("unexpected reply {line:?}")))?;
            Ok((kind, n))
        };
        let bulk =
            |reader: &mut BufReader<TcpStream>, len: i64| -> std::io::Result<Option<String>> {
                let Ok(len) = usize::try_from(len) else {
                    return Ok(None);
                };
                let mut body = vec![0; len + 2];
                reader.read_exact(&mut body)?;
                body.truncate(len);
                Ok(Some(String::from_utf8_lossy(&body).into_owned()))
            };
        match header(&mut reader)? {
            ('$', len) => Ok(bulk(&mut reader, len)?.into_iter().collect()),
            ('*', n) => {
                let mut out = Vec::new();
                for _ in 0..n {
                    match header(&mut reader)? {
                        ('$', len) => out.extend(bulk(&mut reader, len)?),
                        other => return Err(bad(format!("not a bulk string: {other:?}"))),
                    }
                }
                Ok(out)
            }
            other => Err(bad(format!("not strings: {other:?}"))),
        }
    }

    /// The server's count of clients blocked in a blocking command (an
    /// idle worker's `BLPOP`), from `INFO clients`.
    pub fn blocked_clients(&self) -> std::io::Result<u64> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(b"*2\r\n$4\r\nINFO\r\n$7\r\nclients\r\n")?;
        let mut reader = BufReader::new(stream);
        let mut header = String::new();
        reader.read_line(&mut header)?;
        let bad = |what: &str| std::io::Error::other(format!("INFO clients: {what}"));
        let len: usize = header
            .trim_end()
            .strip_prefix('$')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| bad(&format!("unexpected reply {header:?}")))?;
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        String::from_utf8_lossy(&body)
            .lines()
            .find_map(|l| l.strip_prefix("blocked_clients:"))
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| bad("no blocked_clients line"))
    }

    /// Kills the server at once (SIGKILL), keeping its data directory.
    pub fn kill(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("pid")) {
            let _ = Command::new("kill")
                .args(["-9", pid.trim()])
                .stderr(Stdio::null())
                .status();
        }
        if let Some(mut w) = self.watcher.take() {
            let _ = w.wait();
        }
    }

    /// Starts it again on the same port and directory (loading its AOF).
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of three masters, no replicas.
#[derive(Debug)]
pub struct RedisCluster {
    /// The nodes.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three nodes and joins them with `redis-cli --cluster create`.
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_with(&[
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &nodes {
            loop {
                let info = Command::new("redis-cli")
                    .args(["-p", &node.port().to_string(), "cluster", "info"])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "cluster did not become ok:\n{info}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        RedisCluster { nodes }
    }

    /// The URL of the first node (the client discovers the rest).
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// The node serving `key`'s slot.
    pub fn node_of(&self, key: &str) -> &RedisServer {
        let out = Command::new("redis-cli")
            .args([
                "-p",
                &self.nodes[0].port().to_string(),
                "cluster",
                "keyslot",
                key,
            ])
            .output()
            .expect("redis-cli cluster keyslot");
        let slot: u16 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a slot number");
        let out = Command::new("redis-cli")
            .args(["-p", &self.nodes[0].port().to_string(), "cluster", "nodes"])
            .output()
            .expect("redis-cli cluster nodes");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let Some(addr) = fields.get(1) else { continue };
            let port: u16 = addr
                .split(['@', ':'])
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            let owns = fields.iter().skip(8).any(|range| {
                let mut ends = range.split('-').map(|n| n.parse::<u16>());
                match (ends.next(), ends.next()) {
                    (Some(Ok(a)), Some(Ok(b))) => (a..=b).contains(&slot),
                    (Some(Ok(a)), None) => a == slot,
                    _ => false,
                }
            });
            if owns && let Some(node) = self.nodes.iter().find(|n| n.port() == port) {
                return node;
            }
        }
        panic!("no node owns slot {slot} of {key}:\n{text}");
    }
}
