//! The handler of queue `send-email`: delivers an email (what
//! `welcome-email` dispatches: `{to, subject, text, html}`) by POSTing it
//! as JSON to a mail provider's HTTP API.
//!
//! It needs, under `[queues.send-email]` in `runtime.toml` (see
//! `jobs/runtime.toml`):
//!
//! - `allowed_outbound_hosts` listing the provider's origin;
//! - settings in `[queues.send-email.env]`: `MAILER_URL`, the endpoint,
//!   and `MAILER_KEY`, the API key, sent as `Authorization: Bearer <key>`.
//!   The key is a secret: give it as `{ from_env = "MAILER_KEY" }` so it
//!   stays in the worker's environment, not in the file. It is never
//!   logged.
//!
//! A 2xx reply is success; its JSON `id`, if any, is logged. Other replies
//! and network failures retry or fail as `guest_sdk::http` says (5xx and
//! timeouts: retry; 4xx: fail). Each request carries the job's id as its
//! `Idempotency-Key`, the same on every attempt, so a provider that honours
//! the header sends one email even when an attempt's reply was lost and
//! the job ran again.

use guest_sdk::http::Request;
use guest_sdk::{Job, info};
use serde::{Deserialize, Serialize};

/// The payload: an email ready to send.
#[derive(Serialize, Deserialize)]
struct Email {
    to: String,
    subject: String,
    text: String,
    html: String,
}

fn handle(job: Job<Email>) -> guest_sdk::Result {
    let email = &job.payload;
    if email.to.trim().is_empty() {
        return Err(guest_sdk::fail("the email has no recipient (to)"));
    }
    let url = guest_sdk::setting("MAILER_URL")?;
    let key = guest_sdk::setting("MAILER_KEY")?;
    if key.trim().is_empty() {
        return Err(guest_sdk::fail(
            "setting MAILER_KEY is empty: check the variable it is taken from",
        ));
    }
    let response = Request::post(&url)
        .header("authorization", format!("Bearer {key}"))
        .header("idempotency-key", &job.id)
        .header("accept", "application/json")
        .json(email)?
        .send()?
        .error_for_status()?;
    if !response.is_success() {
        // Redirects are not followed: a 3xx means MAILER_URL is out of date.
        return Err(guest_sdk::fail(format!(
            "the mailer answered {} instead of 2xx{}: check MAILER_URL",
            response.status,
            response
                .header("location")
                .map_or(String::new(), |to| format!(" (moved to {to})")),
        )));
    }
    let reply = response.json::<serde_json::Value>().ok();
    match reply.as_ref().map(|r| &r["id"]) {
        Some(serde_json::Value::String(id)) => info!("sent to {} as {id}", email.to),
        Some(id @ serde_json::Value::Number(_)) => info!("sent to {} as {id}", email.to),
        _ => info!("sent to {} (status {})", email.to, response.status),
    }
    Ok(())
}

guest_sdk::export_handler!(handle);
