//! The API's OpenAPI 3.1 document, derived from the handlers' own
//! annotations and the types they answer with, served at
//! `/v1/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::api;
use super::problem::Problem;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "runtime",
        description = "Dispatch jobs to WebAssembly-sandboxed handlers, and inspect and repair their queues. Errors are application/problem+json. Names are read in the token's tenant: a tenant's token names its queues bare (`resize`); the admin writes `tenant/queue`, percent-encoded in paths (`acme%2Fresize`)."
    ),
    paths(
        api::dispatch,
        api::batch,
        api::get_job,
        api::list_jobs,
        api::retry_job,
        api::delete_job,
        api::retry_failed,
        api::purge,
        api::pause,
        api::resume,
        api::queues,
        api::queue,
        api::workers,
        api::tenants,
        api::tenant,
        api::create_tenant,
    ),
    components(schemas(Problem)),
    modifiers(&Bearer),
)]
struct ApiDoc;

/// Every operation takes `Authorization: Bearer TOKEN`.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document, as JSON.
pub fn json() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or_default()
}

/// `GET /v1/openapi.json`.
pub async fn document() -> Json<serde_json::Value> {
    Json(json())
}
