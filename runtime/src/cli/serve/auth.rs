//! Who a request acts as: the admin, or one tenant.
//!
//! With an admin token configured (kept as its SHA-256 only), every request
//! must carry a bearer token: the admin's, or a tenant's (tenants' tokens
//! are kept hashed in the tenant registry, see [`runtime::tenant`]). Tokens
//! are compared by their hashes, in time that does not depend on where they
//! differ. Without an admin token the server only listens on loopback and
//! every request acts as the admin.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode, header};
use runtime::TenantName;
use runtime::queue::TenantStore;
use sha2::{Digest, Sha256};

use super::problem::Problem;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Sees and changes everything.
    Admin,
    /// Sees and changes only its own tenant's queues and jobs.
    Tenant(TenantName),
}

impl Caller {
    /// The tenant names are read in, if any.
    pub fn tenant(&self) -> Option<&TenantName> {
        match self {
            Caller::Admin => None,
            Caller::Tenant(t) => Some(t),
        }
    }
}

/// How long a tenant token found good is trusted without asking the
/// registry again: a rotated or removed tenant's old token works this much
/// longer on a server that saw it just before.
const TRUST: Duration = Duration::from_secs(1);

/// Tokens remembered at most; past this the memory starts over.
const REMEMBERED: usize = 10_000;

/// The server's token check.
#[derive(Debug)]
pub struct Auth {
    /// SHA-256 of the admin token; `None`: no tokens, every caller is the admin.
    admin: Option<[u8; 32]>,
    /// Tenant tokens recently found good, by their SHA-256.
    known: Mutex<HashMap<[u8; 32], (TenantName, Instant)>>,
}

impl Auth {
    pub fn new(admin: Option<[u8; 32]>) -> Self {
        Auth {
            admin,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// Whether requests need a token.
    pub fn required(&self) -> bool {
        self.admin.is_some()
    }

    /// The caller of a request with `headers`: its bearer token, or with
    /// `cookie_ok` the dashboard's session cookie.
    pub async fn caller(
        &self,
        store: &dyn TenantStore,
        headers: &HeaderMap,
        cookie_ok: bool,
    ) -> Result<Caller, Problem> {
        let Some(admin) = &self.admin else {
            return Ok(Caller::Admin);
        };
        let session = cookie_ok
            .then(|| super::dashboard::cookie(headers))
            .flatten();
        let Some(token) = bearer(headers).or(session.as_deref()) else {
            return Err(unauthorized(
                "this server needs a token: send `Authorization: Bearer TOKEN` (the admin token, or a tenant's from `runtime tenants create`)",
            ));
        };
        self.check(store, admin, token).await
    }

    /// The caller whose token is `token`.
    pub async fn check(
        &self,
        store: &dyn TenantStore,
        admin: &[u8; 32],
        token: &str,
    ) -> Result<Caller, Problem> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if runtime::tenant::same_secret(&hash, admin) {
            return Ok(Caller::Admin);
        }
        if let Some(tenant) = self.remembered(&hash) {
            return Ok(Caller::Tenant(tenant));
        }
        match runtime::tenant::authenticate(store, token).await {
            Ok(Some(tenant)) => {
                let mut known = runtime::sync::lock(&self.known);
                if known.len() >= REMEMBERED {
                    known.clear();
                }
                known.insert(hash, (tenant.clone(), Instant::now()));
                Ok(Caller::Tenant(tenant))
            }
            Ok(None) => Err(unauthorized(
                "the token is not valid: it is not the admin token nor any tenant's current token (a rotated token stops working)",
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// The admin token's hash, when tokens are required.
    pub fn admin_hash(&self) -> Option<&[u8; 32]> {
        self.admin.as_ref()
    }

    fn remembered(&self, hash: &[u8; 32]) -> Option<TenantName> {
        let known = runtime::sync::lock(&self.known);
        let (tenant, at) = known.get(hash)?;
        (at.elapsed() < TRUST).then(|| tenant.clone())
    }
}

/// The token of an `Authorization: Bearer` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// SHA-256 of `token`, for the admin token given in the environment.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The hash written in hex (the config's `serve.admin_token_sha256`,
/// already checked to be 64 lowercase hex digits).
pub fn from_hex(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

pub fn unauthorized(detail: &str) -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_whatever_the_scheme_case() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            "Bearer abc".parse().expect("a header value"),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(
            header::AUTHORIZATION,
            "bearer  abc ".parse().expect("a header value"),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(
            header::AUTHORIZATION,
            "Basic abc".parse().expect("a header value"),
        );
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            "Bearer ".parse().expect("a header value"),
        );
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn a_hex_hash_reads_back_as_its_bytes() {
        let h = hash("secret");
        assert_eq!(from_hex(&runtime::tenant::hex(&h)), Some(h));
        assert_eq!(from_hex("zz"), None);
        assert!(runtime::tenant::same_secret(&h, &hash("secret")));
        assert!(!runtime::tenant::same_secret(&h, &hash("secreT")));
    }
}
