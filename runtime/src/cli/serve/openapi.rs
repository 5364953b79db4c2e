//! The API's OpenAPI 3.1 document, derived from the handlers' own
//! annotations and the types they answer with, served at
//! `/v1/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
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
    modifiers(&Bearer, &CommonErrors),
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

/// The errors any operation may answer beside its own: a missing or bad
/// token, a tenant over its request rate, the queue server down; and, with
/// a name or id in the path, one that is invalid or another tenant's.
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        for (path, item) in doc.paths.paths.iter_mut() {
            let named = path.contains('{');
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                let mut add = |status: &str, description: &str| {
                    responses.entry(status.to_string()).or_insert_with(|| {
                        ResponseBuilder::new()
                            .description(description)
                            .content(
                                "application/problem+json",
                                ContentBuilder::new()
                                    .schema(Some(Ref::from_schema_name("Problem")))
                                    .build(),
                            )
                            .build()
                            .into()
                    });
                };
                if named {
                    add("400", "An invalid name or id in the path");
                    add("403", "A name or id of another tenant than the token's");
                }
                add(
                    "401",
                    "No token, or not a valid one (when the server has tokens); see WWW-Authenticate",
                );
                add(
                    "429",
                    "The token's tenant is over its request rate on this server (serve.tenant_request_rate); see Retry-After",
                );
                add("503", "The queue server did not answer");
            }
        }
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
