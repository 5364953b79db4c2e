//! Reaches out as the payload says, and logs what happened, one line per
//! step, for the outbound tests. One mode per payload:
//!
//! - `{"requests": [{"method": "GET", "url": "...", "headers": {"k": "v"},
//!   "body": "...", "timeout_ms": 500, "show_headers": ["location"],
//!   "show_body": true}], "repeat": 1, "map": false}`: makes the requests in
//!   order, `repeat` times over, logging `status 200 body-bytes 12` or
//!   `error HttpRequestDenied` (the `wasi:http` error code's name; `error
//!   (no code): <text>` for a failure before the host was asked), then
//!   `header location: /x` and `body "..."` where asked. Done if every
//!   request got a response (any status); else fails with the last error's
//!   text. With `"map": true`, statuses go through `error_for_status` and
//!   the last error is returned as the SDK maps it (retry, retry after,
//!   fail), to test that mapping end to end.
//! - `{"env": ["NAME", ...]}`: logs the names of all variables it sees, then
//!   `env NAME length 12` or `env NAME missing` for each: never a value.
//! - `{"setting": "NAME"}`: `guest_sdk::setting`, logging `setting NAME
//!   length 12`; a missing one fails the job with the SDK's message.
//! - `{"read_file": "/dir/f"}`: logs `read /dir/f bytes 5 text "hello"`.
//! - `{"write_file": "/dir/f"}`: tries to create and write it; logs `write
//!   /dir/f ok`.
//! - `{"list_dir": "/dir"}`: logs `list /dir ["a.txt", ...]`.
//!
//! - `{"hoard": 100000}`: builds that many requests with bodies, writes
//!   into each body what the host takes without waiting, never sends any,
//!   and keeps them all; logs `hoard N requests B bytes` every 100 and at
//!   the end (until a host bound ends the attempt first). What the host
//!   buffers for it must stay bounded.
//!
//! A file operation that fails fails the job with `<op> <path>: <error>`.

use std::time::Duration;

use guest_sdk::http::{HttpError, Request};
use guest_sdk::{Job, info};
use serde_json::Value;

fn handle(job: Job) -> guest_sdk::Result {
    let p = &job.payload;
    if let Some(requests) = p["requests"].as_array() {
        requests_mode(
            requests,
            p["repeat"].as_u64().unwrap_or(1),
            p["map"] == true,
        )
    } else if let Some(names) = p["env"].as_array() {
        let mut seen: Vec<String> = std::env::vars_os()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        seen.sort();
        info!("env names {seen:?}");
        for name in names.iter().filter_map(Value::as_str) {
            match std::env::var_os(name) {
                Some(value) => info!("env {name} length {}", value.len()),
                None => info!("env {name} missing"),
            }
        }
        Ok(())
    } else if let Some(name) = p["setting"].as_str() {
        let value = guest_sdk::setting(name)?;
        info!("setting {name} length {}", value.len());
        Ok(())
    } else if let Some(path) = p["read_file"].as_str() {
        let bytes =
            std::fs::read(path).map_err(|e| guest_sdk::fail(format!("read {path}: {e}")))?;
        let text: String = String::from_utf8_lossy(&bytes).chars().take(200).collect();
        info!("read {path} bytes {} text {text:?}", bytes.len());
        Ok(())
    } else if let Some(path) = p["write_file"].as_str() {
        std::fs::write(path, b"written by a handler")
            .map_err(|e| guest_sdk::fail(format!("write {path}: {e}")))?;
        info!("write {path} ok");
        Ok(())
    } else if let Some(n) = p["hoard"].as_u64() {
        hoard(n);
        Ok(())
    } else if let Some(path) = p["list_dir"].as_str() {
        let mut names = Vec::new();
        for entry in
            std::fs::read_dir(path).map_err(|e| guest_sdk::fail(format!("list {path}: {e}")))?
        {
            let entry = entry.map_err(|e| guest_sdk::fail(format!("list {path}: {e}")))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        info!("list {path} {names:?}");
        Ok(())
    } else {
        Err(guest_sdk::fail(
            "payload needs one of requests, env, setting, read_file, write_file, list_dir, hoard",
        ))
    }
}

fn hoard(n: u64) {
    use guest_sdk::__http_bindings::wasi::http::types::{Fields, OutgoingRequest};
    let chunk = vec![7u8; 1 << 20];
    let mut kept = Vec::new();
    let mut bytes: u64 = 0;
    for i in 0..n {
        let request = OutgoingRequest::new(Fields::new());
        let Ok(body) = request.body() else { break };
        let Ok(stream) = body.write() else { break };
        while let Ok(permit) = stream.check_write() {
            let len = usize::try_from(permit).unwrap_or(usize::MAX).min(chunk.len());
            if len == 0 || stream.write(&chunk[..len]).is_err() {
                break;
            }
            bytes += len as u64;
        }
        kept.push((request, body, stream));
        if i % 100 == 0 {
            info!("hoard {} requests {bytes} bytes", kept.len());
        }
    }
    info!("hoard {} requests {bytes} bytes", kept.len());
}

fn requests_mode(requests: &[Value], repeat: u64, map: bool) -> guest_sdk::Result {
    let mut last_error: Option<HttpError> = None;
    for _ in 0..repeat {
        for spec in requests {
            if let Err(e) = one_request(spec, map) {
                match e.code() {
                    Some(code) => info!("error {}", code_name(code)),
                    None if e.status_code().is_some() => {}
                    None => info!("error (no code): {e}"),
                }
                last_error = Some(e);
            }
        }
    }
    match last_error {
        None => Ok(()),
        Some(e) if map => Err(e.into()),
        Some(e) => Err(guest_sdk::fail(e.to_string())),
    }
}

fn one_request(spec: &Value, map: bool) -> Result<(), HttpError> {
    let method = spec["method"].as_str().unwrap_or("GET");
    let url = spec["url"].as_str().unwrap_or_default();
    let mut request = Request::new(method, url);
    for (name, value) in spec["headers"].as_object().into_iter().flatten() {
        request = request.header(name, value.as_str().unwrap_or_default());
    }
    if let Some(body) = spec["body"].as_str() {
        request = request.body(body);
    }
    if let Some(ms) = spec["timeout_ms"].as_u64() {
        request = request.timeout(Duration::from_millis(ms));
    }
    let response = request.send()?;
    info!(
        "status {} body-bytes {}",
        response.status,
        response.body.len()
    );
    for name in spec["show_headers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        match response.header(name) {
            Some(value) => info!("header {name}: {value}"),
            None => info!("header {name} missing"),
        }
    }
    if spec["show_body"] == true {
        let text: String = String::from_utf8_lossy(&response.body)
            .chars()
            .take(200)
            .collect();
        info!("body {text:?}");
    }
    if map {
        response.error_for_status()?;
    }
    Ok(())
}

/// The Rust name of a `wasi:http` error code's case (`HttpRequestDenied`),
/// from its debug form (`ErrorCode::HttpResponseBodySize(Some(5))`).
fn code_name(code: &guest_sdk::http::ErrorCode) -> String {
    let debug = format!("{code:?}");
    let name = debug.strip_prefix("ErrorCode::").unwrap_or(&debug);
    name.split('(').next().unwrap_or(name).to_string()
}

guest_sdk::export_handler!(handle);
