//! Handlers reaching the outside world through what the operator grants.

use runtime_tests::{TempDir, guests, runtime};

/// The SDK's HTTP client imports `wasi:http/outgoing-handler`, and only in
/// handlers that use it: the others keep the imports they had.
#[test]
fn only_handlers_that_call_http_import_wasi_http() {
    let cache = TempDir::new("outbound");
    for (file, uses_http) in [
        (format!("{}/{}_job.wasm", guests::DIR, guests::HTTP), true),
        (format!("{}/send_email_job.wasm", guests::JOBS_DIR), true),
        (format!("{}/hello_job.wasm", guests::JOBS_DIR), false),
    ] {
        let run = runtime(cache.path(), &["check", &file], None);
        run.expect_code(0);
        let out = run.stdout();
        assert!(
            out.contains("ok: implements runtime:job/handler@0.1.0"),
            "{out}"
        );
        assert_eq!(
            out.contains("wasi:http/outgoing-handler@0.2."),
            uses_http,
            "{file}: {out}"
        );
    }
}
