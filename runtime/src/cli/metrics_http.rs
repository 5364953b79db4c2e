//! `--metrics-addr`: a minimal HTTP server for Prometheus. `GET /metrics`
//! answers with the worker's metrics and readings taken right then; any
//! other path is a 404. One request per connection, bounded in size and
//! time, so a stuck or hostile client costs one small task.

use std::sync::Arc;
use std::time::Duration;

use runtime::metrics::{Metrics, Readings, rss_bytes};
use runtime::queue::JobQueue;
use runtime::sandbox::Sandbox;
use runtime::{QueueName, TenantName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a scrape reads from.
pub struct Sources {
    pub metrics: Arc<Metrics>,
    pub backend: Arc<dyn JobQueue>,
    /// The sandbox, where this process runs jobs.
    pub sandbox: Option<Arc<Sandbox>>,
    /// The queues whose depth is read; empty: every queue the backend
    /// lists (of `tenant`, if given).
    pub queues: Vec<QueueName>,
    pub tenant: Option<TenantName>,
}

/// Serves until the process ends.
pub async fn serve(listener: TcpListener, sources: Arc<Sources>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let sources = sources.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), answer(stream, &sources)).await;
        });
    }
}

async fn answer(mut stream: TcpStream, sources: &Sources) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() > 8192 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let request = String::from_utf8_lossy(&head);
    let target = request.split_whitespace().take(2).collect::<Vec<_>>();
    let (status, body) = match target.as_slice() {
        ["GET", path] if *path == "/metrics" || path.starts_with("/metrics?") => {
            ("200 OK", sources.metrics.render(&readings(sources).await))
        }
        ["GET", _] => ("404 Not Found", "try /metrics\n".to_string()),
        _ => ("405 Method Not Allowed", "GET /metrics\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// What a scrape reads right then.
pub async fn readings(sources: &Sources) -> Readings {
    let mut depth = Vec::new();
    let mut backend_up = true;
    let listed;
    let queues = if sources.queues.is_empty() {
        listed = match tokio::time::timeout(Duration::from_secs(2), sources.backend.queues()).await
        {
            Ok(Ok(all)) => all
                .into_iter()
                .filter(|q| sources.tenant.as_ref().is_none_or(|t| q.is_in(t)))
                .collect(),
            _ => {
                backend_up = false;
                Vec::new()
            }
        };
        &listed
    } else {
        &sources.queues
    };
    for queue in queues {
        let counts =
            tokio::time::timeout(Duration::from_secs(2), sources.backend.counts(queue)).await;
        match counts {
            Ok(Ok(c)) => depth.push((queue.clone(), c)),
            _ => {
                backend_up = false;
                break;
            }
        }
    }
    if !backend_up {
        depth.clear();
    }
    Readings {
        depth,
        backend_up,
        sandbox: sources
            .sandbox
            .as_ref()
            .map(|s| s.stats())
            .unwrap_or_default(),
        http: sources
            .sandbox
            .as_ref()
            .map(|s| s.http_requests())
            .unwrap_or_default(),
        rss_bytes: rss_bytes(),
    }
}
