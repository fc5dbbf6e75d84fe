//! Checks that a component targets the `transform` world of the contract version this host
//! runs, before anything else is done with it, so a mismatch gets a one-line answer.

use wasmtime::component::Component;
use wasmtime::Engine;

use super::PluginError;

/// The WIT package of the contract.
pub const CONTRACT_PACKAGE: &str = "sluice:plugin";
/// The contract version this host implements.
pub const CONTRACT_VERSION: &str = "0.1.0";

/// What a component exports and imports, once checked against the contract.
#[derive(Debug, Clone)]
pub struct ContractInfo {
    /// The contract version the component was built against (e.g. `0.1.0`).
    pub version: String,
    /// Export names.
    pub exports: Vec<String>,
    /// Import names.
    pub imports: Vec<String>,
}

/// Tells whether the bytes are a component, and if not what they are instead.
pub fn check_bytes(bytes: &[u8]) -> Result<(), PluginError> {
    const MAGIC: &[u8] = b"\0asm";
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(PluginError::NotAComponent(
            "not a WebAssembly file: expected a component (a .wasm file built for wasm32-wasip2)".into(),
        ));
    }
    if bytes[6..8] != [1, 0] {
        return Err(PluginError::NotAComponent(
            "a core WebAssembly module, not a component: build for wasm32-wasip2, or wrap it \
             with `wasm-tools component new`"
                .into(),
        ));
    }
    Ok(())
}

/// Splits `sluice:plugin/transformer@0.1.0` into its interface path and version.
fn split_version(name: &str) -> (&str, Option<&str>) {
    match name.rsplit_once('@') {
        Some((path, version)) => (path, Some(version)),
        None => (name, None),
    }
}

/// Major compatibility in semver terms: `0.x` versions are compatible only with the same
/// minor, others with the same major.
fn compatible(a: &str, b: &str) -> bool {
    let parts = |v: &str| v.split('.').map(str::to_string).collect::<Vec<_>>();
    let (a, b) = (parts(a), parts(b));
    match (a.first(), b.first()) {
        (Some(x), Some(y)) if x == "0" && y == "0" => a.get(1) == b.get(1),
        (x, y) => x == y,
    }
}

/// Checks the component's exports and imports against the contract.
pub fn check(engine: &Engine, component: &Component) -> Result<ContractInfo, PluginError> {
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
    let expected = format!("{CONTRACT_PACKAGE}/transformer@{CONTRACT_VERSION}");
    let found = exports
        .iter()
        .find_map(|e| match split_version(e) {
            (path, Some(v)) if path == format!("{CONTRACT_PACKAGE}/transformer") => Some(v.to_string()),
            _ => None,
        })
        .ok_or_else(|| {
            PluginError::Contract(format!(
                "not a Sluice plugin: expected the world {CONTRACT_PACKAGE}/transform@{CONTRACT_VERSION} \
                 (an export {expected}), found exports [{}]",
                exports.join(", ")
            ))
        })?;
    if !compatible(&found, CONTRACT_VERSION) {
        return Err(PluginError::Contract(format!(
            "built for {CONTRACT_PACKAGE}@{found}, but this host runs {CONTRACT_PACKAGE}@{CONTRACT_VERSION}: \
             rebuild the plugin against the wit/ of this Sluice release"
        )));
    }
    for import in &imports {
        let (path, version) = split_version(import);
        let allowed = match path.split_once('/') {
            Some((CONTRACT_PACKAGE, "host" | "types")) => version.is_some_and(|v| compatible(v, CONTRACT_VERSION)),
            Some((package, _)) if package.starts_with("wasi:") => version.is_some_and(|v| v.starts_with("0.2.")),
            _ => false,
        };
        if !allowed {
            return Err(PluginError::Contract(format!(
                "imports {import}, which Sluice does not provide: a plugin may import \
                 {CONTRACT_PACKAGE}/host@{CONTRACT_VERSION} and WASI 0.2 interfaces"
            )));
        }
    }
    Ok(ContractInfo {
        version: found,
        exports,
        imports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_compatible_within_a_zero_minor_or_a_major() {
        assert!(compatible("0.1.0", "0.1.3"));
        assert!(!compatible("0.2.0", "0.1.0"));
        assert!(compatible("1.2.0", "1.0.0"));
        assert!(!compatible("2.0.0", "1.0.0"));
    }

    #[test]
    fn bytes_that_are_not_a_component_are_named() {
        let module = b"\0asm\x01\0\0\0";
        assert!(check_bytes(module)
            .unwrap_err()
            .to_string()
            .contains("core WebAssembly module"));
        assert!(check_bytes(b"hello world")
            .unwrap_err()
            .to_string()
            .contains("not a WebAssembly file"));
        assert!(check_bytes(b"\0asm\x0d\0\x01\0").is_ok());
    }
}
