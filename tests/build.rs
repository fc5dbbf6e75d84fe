//! Builds the plugins the tests use, so no manual step is needed: the Rust plugins with
//! `cargo build --target wasm32-wasip2` (their own workspace and target folder), the Python
//! and JavaScript ones with `plugins/build-guests.sh` when their toolchains are installed
//! (`plugins/toolchains.sh`; `.ci/run` does it).

use std::path::{Path, PathBuf};
use std::process::Command;

const RUST_PLUGINS: &[&str] = &[
    "currency",
    "risk",
    "modes",
    "bad-loop",
    "bad-memory",
    "bad-panic",
    "bad-version",
];

fn main() {
    // Read when the script runs, not baked in when it is compiled: a build folder shared by
    // two checkouts (CI's cache) may run a script compiled in the other one.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")).join("..");
    let plugins = root.join("plugins");
    for path in [
        "wit",
        "sdk/src",
        "sdk/Cargo.toml",
        "plugins/Cargo.toml",
        "plugins/build-guests.sh",
        "sdk/python",
        "sdk/js",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
    for name in RUST_PLUGINS {
        println!("cargo:rerun-if-changed={}", plugins.join(name).join("src").display());
        println!(
            "cargo:rerun-if-changed={}",
            plugins.join(name).join("Cargo.toml").display()
        );
    }
    for name in [
        "currency-py",
        "currency-js",
        "modes-py",
        "modes-js",
        "sandbox-py",
        "sandbox-js",
    ] {
        println!("cargo:rerun-if-changed={}", plugins.join(name).display());
    }
    println!("cargo:rerun-if-env-changed=SLUICE_TOOLCHAINS");
    println!("cargo:rerun-if-env-changed=SLUICE_PLUGINS_TARGET_DIR");

    let target_dir = std::env::var_os("SLUICE_PLUGINS_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| plugins.join("target"));
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .current_dir(&plugins)
        .args(["build", "--release", "--target", "wasm32-wasip2"]);
    clean_env(&mut cargo);
    cargo.env("CARGO_TARGET_DIR", &target_dir);
    let status = cargo.status().expect("running cargo to build the plugins");
    assert!(
        status.success(),
        "building the Rust plugins failed (is the wasm32-wasip2 target installed? `rustup target add wasm32-wasip2`)"
    );
    let wasm_dir = target_dir.join("wasm32-wasip2").join("release");
    println!("cargo:rustc-env=SLUICE_RUST_PLUGINS={}", wasm_dir.display());

    let dist = plugins.join("dist");
    println!("cargo:rustc-env=SLUICE_GUEST_PLUGINS={}", dist.display());
    build_guests(&plugins);
}

/// Runs the Python/JavaScript build when its toolchains are present; otherwise the tests
/// that need those plugins fail with a message saying how to install them.
fn build_guests(plugins: &Path) {
    let script = plugins.join("build-guests.sh");
    if !script.exists() {
        return;
    }
    let mut bash = Command::new("bash");
    bash.arg(&script).env("SLUICE_REQUIRE_TOOLCHAINS", "0");
    clean_env(&mut bash);
    match bash.output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => println!(
            "cargo:warning=building the Python/JavaScript plugins failed: {}",
            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")
        ),
        Err(e) => println!("cargo:warning=cannot run {}: {e}", script.display()),
    }
}

/// A nested cargo must not inherit the outer build's settings (target, flags, jobserver).
fn clean_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let keep = key == "CARGO_HOME" || key == "CARGO" || key == "CARGO_NET_OFFLINE";
        let outer = key.starts_with("CARGO_")
            || key.starts_with("RUSTC")
            || key.starts_with("DEP_")
            || matches!(
                key.as_str(),
                "TARGET"
                    | "HOST"
                    | "OUT_DIR"
                    | "OPT_LEVEL"
                    | "PROFILE"
                    | "DEBUG"
                    | "NUM_JOBS"
                    | "RUSTDOC"
                    | "RUSTFLAGS"
                    | "MAKEFLAGS"
                    | "MFLAGS"
            );
        if outer && !keep {
            command.env_remove(&key);
        }
    }
}
