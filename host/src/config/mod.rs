//! Configuration: the host (services, data folder, plugins) and the feature sets, from TOML.
//!
//! Two phases: [`parse`] reads the file (serde, unknown keys refused) and [`validate`] checks
//! everything that can be checked without I/O, reporting every problem at once, each with the
//! file and the key. Building the running pipeline (connecting) happens elsewhere.

mod feature_set;
mod validate;

pub use crate::duration::{parse_duration, ConfigDuration};
pub use feature_set::{
    AggregationConfig, FeatureSetConfig, FileFormat, Reading, SourceConfig, StepConfig, StepKind, TargetConfig,
    TimeFormat, TimestampConfig,
};
pub use validate::{notes, output_fields, refuse_unknown, validate};

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Services and folders.
    #[serde(default)]
    pub host: HostConfig,
    /// Plugins to deploy at start: name → component file (relative to the config file).
    #[serde(default)]
    pub plugins: BTreeMap<String, PathBuf>,
    /// The feature sets.
    #[serde(default, rename = "feature_set")]
    pub feature_sets: Vec<FeatureSetConfig>,
    /// The HTTP API: served by `sluice run` when present.
    #[serde(default)]
    pub http: Option<HttpConfig>,
    /// API tokens (their SHA-256, never the tokens themselves).
    #[serde(default, rename = "token")]
    pub tokens: Vec<TokenConfig>,
    /// Named lists of features (`set:feature`) a lookup can ask for by name.
    #[serde(default, rename = "feature_vector")]
    pub feature_vectors: Vec<FeatureVectorConfig>,
    /// The folder of the config file, to resolve relative paths.
    #[serde(skip)]
    pub base: PathBuf,
    /// The config file, for messages.
    #[serde(skip)]
    pub file: PathBuf,
}

/// Where the services are and where data goes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// NATS server URL. Leave it and `redis` out (or empty) for the embedded mode: one
    /// process, the online store and event logs in `<data_dir>/sluice.redb`.
    pub nats: String,
    /// Redis URL (`redis://host:port/db`).
    pub redis: String,
    /// Prefix of every online-store key Sluice writes (tests use their own).
    pub redis_prefix: String,
    /// Folder for offline data and the artifact cache (relative to the config file).
    pub data_dir: PathBuf,
    /// Embedded mode only: how long its logs (ingested events, feature rows, dead letters,
    /// late events) keep a message, e.g. `"7d"`; older ones are removed from the file. Unset:
    /// kept for ever, as on a JetStream stream without limits (on NATS, set limits on the
    /// streams themselves).
    pub log_retention: Option<ConfigDuration>,
}

/// A named list of features from one or more feature sets, e.g. what a model reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureVectorConfig {
    /// Its name.
    pub name: String,
    /// `set:feature` (or `set:*`) entries.
    pub features: Vec<String>,
}

/// The HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on (`127.0.0.1:8080`; port 0 picks a free one).
    pub bind: String,
    /// Largest accepted request body, in bytes.
    #[serde(default = "max_body_bytes")]
    pub max_body_bytes: usize,
    /// PEM certificate chain: with `tls_key`, the API speaks HTTPS only (TLS 1.3; relative
    /// paths from the config file).
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert` (PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}

fn max_body_bytes() -> usize {
    1 << 20
}

/// One API token: a name (in logs), the SHA-256 of the token (hex; `sluice token new` makes
/// both), its scopes, and optionally the feature sets it is limited to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Name, shown in logs and audit lines.
    pub name: String,
    /// SHA-256 of the token, 64 hex digits.
    pub sha256: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// Feature sets it is limited to (empty: all).
    #[serde(default)]
    pub sets: Vec<String>,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Online lookups and metrics.
    Read,
    /// Pushing events.
    Ingest,
    /// Deploying plugins.
    Deploy,
    /// Everything.
    Admin,
}

/// The embedded store's file, in the data folder.
pub const EMBEDDED_FILE: &str = "sluice.redb";

impl HostConfig {
    /// Whether the host runs in the embedded mode (no NATS, no Redis configured).
    pub fn embedded(&self) -> bool {
        self.nats.trim().is_empty() && self.redis.trim().is_empty()
    }
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            nats: String::new(),
            redis: String::new(),
            redis_prefix: "sluice".into(),
            data_dir: "data".into(),
            log_retention: None,
        }
    }
}

impl Config {
    /// The feature set a chained source reads: by name, the given version or the highest.
    pub fn upstream(&self, name: &str, version: Option<u32>) -> Option<&FeatureSetConfig> {
        self.feature_sets
            .iter()
            .filter(|s| s.name == name && version.is_none_or(|v| s.version == v))
            .max_by_key(|s| s.version)
    }

    /// Where a feature set's rows are published (and its offline writer reads them): its
    /// stream target; for a set with a parquet target and no stream target, a stream of its
    /// own, `SLUICE_ROWS_<set>_v<version>` on `sluice.rows.<set>.v<version>`, created on demand.
    pub fn stream_target(set: &FeatureSetConfig) -> Option<(String, String, bool)> {
        let declared = set.targets.iter().find_map(|t| match t {
            TargetConfig::Stream {
                stream,
                subject,
                create,
            } => Some((stream.clone(), subject.clone(), *create)),
            _ => None,
        });
        declared.or_else(|| {
            set.targets
                .iter()
                .any(|t| matches!(t, TargetConfig::Parquet { .. }))
                .then(|| {
                    (
                        format!("SLUICE_ROWS_{}_v{}", set.name, set.version),
                        format!("sluice.rows.{}.v{}", set.name, set.version),
                        true,
                    )
                })
        })
    }

    /// Resolves a path from the config against the config file's folder.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base.join(path)
        }
    }
}

/// One problem found in a configuration: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key, e.g. `feature_set[0].steps[2].expr`.
    pub key: String,
    /// What is wrong and what was expected.
    pub message: String,
}

/// A configuration that cannot be used, with every problem found.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// Every problem.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{}: {n} problem{}",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  {}: {}", p.key, p.message)?;
        }
        Ok(())
    }
}

/// Reads and parses a config file (no validation beyond the file's shape).
pub fn parse(file: &Path) -> Result<Config, ConfigError> {
    let fail = |key: &str, message: String| ConfigError {
        file: file.to_path_buf(),
        problems: vec![Problem {
            key: key.into(),
            message,
        }],
    };
    let text = std::fs::read_to_string(file).map_err(|e| fail("(file)", format!("cannot read: {e}")))?;
    parse_str(&text, file)
}

/// Parses config text; `file` names it in messages and anchors relative paths.
pub fn parse_str(text: &str, file: &Path) -> Result<Config, ConfigError> {
    let mut config: Config = toml::from_str(text).map_err(|e| {
        let key = e
            .span()
            .map(|s| locate(text, s.start))
            .unwrap_or_else(|| "(file)".into());
        ConfigError {
            file: file.to_path_buf(),
            problems: vec![Problem {
                key,
                message: e.message().to_string(),
            }],
        }
    })?;
    config.base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    config.file = file.to_path_buf();
    Ok(config)
}

/// `line N` of a byte offset, for parse errors.
fn locate(text: &str, offset: usize) -> String {
    let line = text[..offset.min(text.len())].matches('\n').count() + 1;
    format!("line {line}")
}

/// Parses and validates: the one call `sluice validate` and `sluice run` make.
pub fn load(file: &Path) -> Result<Config, ConfigError> {
    let config = parse(file)?;
    let problems = validate(&config);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError {
            file: file.to_path_buf(),
            problems,
        })
    }
}

impl crate::steps::Around for Config {
    fn set(&self, name: &str) -> Option<crate::steps::SetFacts<'_>> {
        self.feature_sets
            .iter()
            .find(|s| s.name == name)
            .map(FeatureSetConfig::facts)
    }

    fn has_plugin(&self, name: &str) -> bool {
        self.plugins.contains_key(name)
    }
}
