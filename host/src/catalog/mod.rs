//! The on-disk state under the data folder that outlives a process: plugin versions deployed
//! over HTTP (restored at start), feature set definitions applied over HTTP and the version
//! served of each, training-set jobs ([`jobs`]), reference profiles ([`references`]), and the
//! atomic write every stored file goes through.

pub mod jobs;
pub mod references;

use std::path::{Path as FsPath, PathBuf};

use crate::config::FeatureSetConfig;
use crate::plugin::Registry;

/// Writes a file whole or not at all: a temporary file, fsync, rename (what the server
/// stores: deployed plugins, applied definitions, choices).
pub fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Where deployed components are kept.
pub fn store_dir(data_dir: &FsPath) -> PathBuf {
    data_dir.join("plugins")
}

/// Records which version of a plugin is active (its component stored beside).
pub fn store_active(dir: &FsPath, name: &str, hash: &str, bytes: Option<&[u8]>) -> std::io::Result<()> {
    let folder = dir.join(name);
    if let Some(bytes) = bytes {
        write_atomically(&folder.join(format!("{hash}.wasm")), bytes)?;
    }
    write_atomically(&folder.join("ACTIVE"), hash.as_bytes())
}

/// The plugins deployed over HTTP, by name, with the stored component of the active version.
pub fn stored_plugins(dir: &FsPath) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Ok(hash) = std::fs::read_to_string(entry.path().join("ACTIVE")) else {
            continue;
        };
        found.push((name, entry.path().join(format!("{}.wasm", hash.trim()))));
    }
    found
}

/// Deploys the stored active version of every plugin (at start, after the config's own).
pub fn restore(registry: &Registry, dir: &FsPath) -> Vec<String> {
    let mut restored = Vec::new();
    for (name, component) in stored_plugins(dir) {
        let Ok(bytes) = std::fs::read(&component) else {
            continue;
        };
        match registry.deploy(&name, &bytes, Some("restored")) {
            Ok(d) => restored.push(d.version.label()),
            Err(e) => tracing::warn!(plugin = %name, "the stored plugin could not be restored: {e}"),
        }
    }
    restored
}

/// Where definitions applied over HTTP are kept (`<name>-v<version>.toml`), with the served
/// version of each name (`<name>.serving`).
pub fn definitions_dir(data_dir: &FsPath) -> PathBuf {
    data_dir.join("feature_sets")
}

/// The version chosen with `serve`, if any.
pub fn serving_choice(data_dir: &FsPath, name: &str) -> Option<u32> {
    std::fs::read_to_string(definitions_dir(data_dir).join(format!("{name}.serving")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Definitions applied over HTTP earlier (added to the config at start).
pub fn stored_definitions(data_dir: &FsPath) -> Vec<FeatureSetConfig> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(definitions_dir(data_dir)) else {
        return out;
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    for path in paths {
        match std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| toml::from_str::<FeatureSetConfig>(&t).map_err(|e| e.to_string()))
        {
            Ok(set) => out.push(set),
            Err(e) => tracing::warn!(file = %path.display(), "a stored feature set definition is unreadable: {e}"),
        }
    }
    out
}

/// The definition of a feature set version that the offline commands (`training-set`,
/// `profile`) use: `version` when given, else the version lookups serve (`serve`, kept in the
/// catalog), else the highest defined; from the config or applied over HTTP. A version with no
/// definition of its own (a backfill's) takes the highest one's steps under its own number, so
/// what it reports is labelled with the version it read.
pub fn definition_of(config: &crate::config::Config, name: &str, version: Option<u32>) -> Option<FeatureSetConfig> {
    let data_dir = config.resolve(&config.host.data_dir);
    let mut defined: Vec<FeatureSetConfig> = config.feature_sets.iter().filter(|s| s.name == name).cloned().collect();
    for set in stored_definitions(&data_dir).into_iter().filter(|s| s.name == name) {
        if !defined.iter().any(|d| d.version == set.version) {
            defined.push(set);
        }
    }
    let wanted = version.or_else(|| serving_choice(&data_dir, name));
    let mut chosen = wanted
        .and_then(|v| defined.iter().find(|s| s.version == v))
        .or_else(|| defined.iter().max_by_key(|s| s.version))?
        .clone();
    if let Some(v) = wanted {
        chosen.version = v;
    }
    Some(chosen)
}
