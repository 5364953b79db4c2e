//! Errors as `application/problem+json` (RFC 9457): the status, a short
//! title, and in `detail` the same words the CLI prints for the same
//! mistake.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use runtime::{InputError, QueueError};
use serde::Serialize;
use utoipa::ToSchema;

/// An error answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// Always `about:blank`: the status and title say what kind of error.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The status's own phrase, e.g. `Not Found`.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What is wrong and what to do, in the CLI's words.
    pub detail: String,
    /// In a batch: the 0-based position of the job that was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// With 429: seconds until a retry may be admitted (also the
    /// `Retry-After` header).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Problem {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            index: None,
            retry_after: None,
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::NOT_FOUND, detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::FORBIDDEN, detail)
    }

    /// The same problem, about the job at `index` of a batch.
    pub fn at(mut self, index: usize) -> Self {
        self.index = Some(index);
        self
    }

    /// A 429 to be retried after `seconds`.
    pub fn too_many(detail: impl Into<String>, seconds: u64) -> Self {
        let mut p = Problem::new(StatusCode::TOO_MANY_REQUESTS, detail);
        p.retry_after = Some(seconds.max(1));
        p
    }

    fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"runtime\""),
            );
        }
        response
    }
}

impl From<InputError> for Problem {
    fn from(e: InputError) -> Self {
        match e {
            InputError::PayloadTooLarge { .. } => {
                Problem::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
            }
            InputError::OtherTenant(_) | InputError::OutsideTenant { .. } => {
                Problem::forbidden(e.to_string())
            }
            _ => Problem::bad_request(e.to_string()),
        }
    }
}

impl From<QueueError> for Problem {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Input(input) => input.into(),
            QueueError::NoSuchJob(_) => Problem::not_found(e.to_string()),
            QueueError::WrongState { .. } | QueueError::QueueBusy { .. } => {
                Problem::new(StatusCode::CONFLICT, e.to_string())
            }
            QueueError::RateLimited { retry_after, .. } => {
                let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                Problem::too_many(e.to_string(), seconds)
            }
            // Admitted only once its workers catch up: a retry later may
            // pass, and a second is the shortest wait worth asking.
            QueueError::BacklogFull { .. } => Problem::too_many(e.to_string(), 1),
            QueueError::OverBurst { .. } => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            }
            // The server's address is the operator's business, not every
            // caller's: the log has it.
            QueueError::Backend { .. } => {
                tracing::warn!("queue server: {e}");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the queue server is unreachable or failed: try again shortly (the server's log says why)",
                )
            }
            _ => Problem::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        }
    }
}
