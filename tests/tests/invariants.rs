//! Properties of the code base itself.

use runtime_tests::root;

/// The guest SDK is compiled into every handler: it must not pull in the
/// host's world.
#[test]
fn guest_sdk_depends_on_nothing_host_side() {
    let manifest = std::fs::read_to_string(root().join("guest-sdk/Cargo.toml")).expect("read");
    let manifest: toml::Table = manifest.parse().expect("valid TOML");
    let deps = manifest
        .get("dependencies")
        .and_then(|d| d.as_table())
        .expect("[dependencies]");
    for forbidden in ["wasmtime", "wasmtime-wasi", "tokio", "redis", "runtime"] {
        assert!(
            !deps.contains_key(forbidden),
            "guest-sdk depends on {forbidden}"
        );
    }
    assert!(deps.contains_key("wit-bindgen"));
}
