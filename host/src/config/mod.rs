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
    /// The models served from this host: their lookups, predictions and labels can be
    /// captured.
    #[serde(default, rename = "model")]
    pub models: Vec<ModelConfig>,
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

/// A model served features by this host (`[[model]]`): lookups that name it in `capture` are
/// recorded as served, with the predictions and labels posted for them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Its name (letters, digits, `_`, `-`).
    pub name: String,
    /// The feature vector it is served (`[[feature_vector]]`), or
    #[serde(default)]
    pub vector: Option<String>,
    /// the features it is served (`set:feature` or `set:*`).
    #[serde(default)]
    pub features: Vec<String>,
    /// Its prediction fields and their types.
    pub predictions: BTreeMap<String, ValueType>,
    /// The fields of the labels that come for its predictions, and their types.
    #[serde(default)]
    pub labels: BTreeMap<String, ValueType>,
    /// One lookup in this many is captured, chosen by its request id (default 1: all).
    #[serde(default = "one")]
    pub capture_one_in: u64,
    /// A label given by entity and time labels that entity's last captured lookup at or
    /// before the time, if no older than this (default 1 day).
    #[serde(default)]
    pub label_within: Option<ConfigDuration>,
}

impl ModelConfig {
    /// [`ModelConfig::label_within`] in microseconds.
    pub fn label_within_micros(&self) -> i64 {
        self.label_within
            .as_ref()
            .map_or(86_400_000_000, ConfigDuration::micros)
    }
}

fn one() -> u64 {
    1
}

/// The type of a prediction or label field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    /// A JSON number.
    Float,
    /// A whole JSON number.
    Int,
    /// `true` or `false`.
    Bool,
    /// A JSON string.
    String,
}

impl ValueType {
    /// Whether a JSON value is of this type (a null is: a field may be unknown).
    pub fn accepts(self, value: &serde_json::Value) -> bool {
        match self {
            _ if value.is_null() => true,
            ValueType::Float => value.is_number(),
            ValueType::Int => value.is_i64() || value.is_u64(),
            ValueType::Bool => value.is_boolean(),
            ValueType::String => value.is_string(),
        }
    }

    /// The name a user writes.
    pub fn name(self) -> &'static str {
        match self {
            ValueType::Float => "float",
            ValueType::Int => "int",
            ValueType::Bool => "bool",
            ValueType::String => "string",
        }
    }
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
    /// Posting a model's predictions and labels.
    Capture,
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
    /// The line of the key (or of the nearest enclosing table found) in the file, when known.
    pub line: Option<usize>,
}

impl Problem {
    /// A problem at `key`, its line not known yet (see [`locate_problems`]).
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            message: message.into(),
            line: None,
        }
    }
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
            match p.line {
                Some(line) => write!(f, "\n  {} (line {line}): {}", p.key, p.message)?,
                None => write!(f, "\n  {}: {}", p.key, p.message)?,
            }
        }
        Ok(())
    }
}

/// Reads and parses a config file (no validation beyond the file's shape).
pub fn parse(file: &Path) -> Result<Config, ConfigError> {
    parse_str(&read(file)?, file)
}

fn read(file: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(file).map_err(|e| ConfigError {
        file: file.to_path_buf(),
        problems: vec![Problem::new("(file)", format!("cannot read: {e}"))],
    })
}

/// Parses config text; `file` names it in messages and anchors relative paths.
pub fn parse_str(text: &str, file: &Path) -> Result<Config, ConfigError> {
    let mut config: Config = toml::from_str(text).map_err(|e| ConfigError {
        file: file.to_path_buf(),
        problems: vec![parse_problem(text, &e)],
    })?;
    config.base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    config.file = file.to_path_buf();
    Ok(config)
}

/// A parse error as a problem at its key's own line. The error's span is right for most
/// errors, but a step's keys are checked after its table is read (`StepConfig`), so an error
/// inside a step spans the whole `steps` array: the step is found by its id, and the key the
/// message names (`unknown field `x``) within it.
fn parse_problem(text: &str, e: &toml::de::Error) -> Problem {
    let message = e.message().to_string();
    let mut problem = Problem::new("(file)", message.clone());
    problem.line = e.span().map(|s| line_at(text, s.start));
    let Some(id) = message
        .strip_prefix("step \"")
        .and_then(|rest| rest.split_once('"'))
        .map(|(id, _)| id)
    else {
        return problem;
    };
    let Ok(doc) = toml::de::DeTable::parse(text) else {
        return problem;
    };
    let sets = doc.get_ref().get("feature_set").map(|v| v.get_ref());
    for (i, set) in sets.and_then(array).into_iter().flatten().enumerate() {
        let steps = set.get_ref().get("steps").and_then(|v| array(v.get_ref()));
        for (j, step) in steps.into_iter().flatten().enumerate() {
            if step.get_ref().get("id").and_then(|v| v.get_ref().as_str()) != Some(id) {
                continue;
            }
            let mut key = format!("feature_set[{i}].steps[{j}]");
            let named = message
                .split_once("unknown field `")
                .and_then(|(_, rest)| rest.split_once('`'))
                .map(|(field, _)| field)
                .or_else(|| message.contains("unknown variant").then_some("kind"));
            if let Some(field) = named {
                key = format!("{key}.{field}");
            }
            problem.line = line_of(text, &doc, &key);
            problem.key = key;
            return problem;
        }
    }
    problem
}

fn array<'a, 'i>(value: &'a toml::de::DeValue<'i>) -> Option<&'a [toml::Spanned<toml::de::DeValue<'i>>]> {
    match value {
        toml::de::DeValue::Array(a) => Some(a),
        _ => None,
    }
}

/// The 1-based line of a byte offset.
fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The line of a problem's key (`feature_set[0].steps[2].expr`) in the parsed document: the
/// key's own line, or the deepest enclosing table or element found.
fn line_of(text: &str, doc: &toml::Spanned<toml::de::DeTable<'_>>, key: &str) -> Option<usize> {
    let mut at: Option<&toml::Spanned<toml::de::DeValue<'_>>> = None;
    let mut line = None;
    for part in key.split('.') {
        let (name, indexes) = part.split_once('[').map_or((part, ""), |(n, rest)| (n, rest));
        let next = match at {
            None => doc.get_ref().get(name),
            Some(v) => v.get_ref().get(name),
        };
        let Some(mut value) = next else { break };
        line = Some(line_at(text, value.span().start));
        for index in indexes.split('[').map(|i| i.trim_end_matches(']')) {
            let Some(element) = index.parse::<usize>().ok().and_then(|i| value.get_ref().get(i)) else {
                break;
            };
            value = element;
            line = Some(line_at(text, value.span().start));
        }
        at = Some(value);
    }
    line
}

/// Sets each problem's line from the config text (problems without a key found keep none).
pub fn locate_problems(text: &str, problems: &mut [Problem]) {
    if let Ok(doc) = toml::de::DeTable::parse(text) {
        for p in problems.iter_mut().filter(|p| p.line.is_none()) {
            p.line = line_of(text, &doc, &p.key);
        }
    }
}

/// Parses and validates: the one call `sluice validate` and `sluice run` make.
pub fn load(file: &Path) -> Result<Config, ConfigError> {
    let text = read(file)?;
    let config = parse_str(&text, file)?;
    let mut problems = validate(&config);
    if problems.is_empty() {
        Ok(config)
    } else {
        locate_problems(&text, &mut problems);
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
