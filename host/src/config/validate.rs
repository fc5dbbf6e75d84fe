//! Validation without I/O: every problem at once, each with its key.

use std::collections::{BTreeSet, HashSet};

use super::{Config, FeatureSetConfig, Problem, SourceConfig, TimeFormat};
use crate::steps::Resolve;

/// What `sluice validate` tells about a valid config that a user should know: how each set
/// reads its event times (`auto` reads text only: a number's unit cannot be known).
pub fn notes(config: &Config) -> Vec<Problem> {
    config
        .feature_sets
        .iter()
        .enumerate()
        .filter(|(_, set)| set.timestamp.format == TimeFormat::Auto)
        .map(|(i, set)| {
            Problem::new(
                format!("feature_set[{i}].timestamp.format"),
                format!(
                    "\"auto\" reads \"{}\" as RFC 3339 or YYYY-MM-DD HH:MM:SS[.fraction][+HH:MM] text (naive times \
                 in {}); an epoch number is a dead letter, since its unit cannot be known: declare \
                 format = \"epoch_s\", \"epoch_ms\", \"epoch_us\" or \"epoch_ns\" if the field holds numbers",
                    set.timestamp.field,
                    set.timestamp.timezone.as_deref().unwrap_or("UTC")
                ),
            )
        })
        .collect()
}

/// Checks a parsed config; returns every problem found (empty: valid).
pub fn validate(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut report = |key: String, message: String| problems.push(Problem::new(key, message));
    let (nats, redis) = (config.host.nats.trim().is_empty(), config.host.redis.trim().is_empty());
    if nats != redis {
        let (key, other) = if nats {
            ("host.nats", "host.redis")
        } else {
            ("host.redis", "host.nats")
        };
        report(
            key.into(),
            format!(
                "missing while {other} is set: production mode needs both NATS and Redis; leave both out for the \
                 embedded single-process mode"
            ),
        );
    }
    if let Some(retention) = &config.host.log_retention {
        if !config.host.embedded() {
            report(
                "host.log_retention".into(),
                "applies to the embedded mode's logs only; with NATS, set limits (max_age) on the JetStream streams"
                    .into(),
            );
        } else if let Err(e) = retention.get() {
            report("host.log_retention".into(), e.into());
        }
    }
    for name in config.plugins.keys() {
        if crate::plugin::PluginName::new(name).is_err() {
            report(
                format!("plugins.{name}"),
                "plugin names are 1-64 characters of a-z, 0-9, '-' or '_'".into(),
            );
        }
    }
    let mut seen = HashSet::new();
    for (i, set) in config.feature_sets.iter().enumerate() {
        let at = format!("feature_set[{i}]");
        if !seen.insert((set.name.clone(), set.version)) {
            report(
                format!("{at}.name"),
                format!("feature set \"{}\" version {} is defined twice", set.name, set.version),
            );
        }
        check_set(config, set, &at, &mut report);
    }
    check_access(config, &mut report);
    problems
}

/// The HTTP section and the tokens.
fn check_access(config: &Config, report: &mut impl FnMut(String, String)) {
    if let Some(http) = &config.http {
        if http.tls_cert.is_some() != http.tls_key.is_some() {
            let (key, other) = if http.tls_cert.is_none() {
                ("http.tls_cert", "http.tls_key")
            } else {
                ("http.tls_key", "http.tls_cert")
            };
            report(
                key.into(),
                format!("missing while {other} is set: HTTPS needs both the certificate chain and its private key (PEM files)"),
            );
        }
        if http.bind.parse::<std::net::SocketAddr>().is_err() {
            report(
                "http.bind".into(),
                format!("{:?}: expected an address and port, e.g. 127.0.0.1:8080", http.bind),
            );
        }
    }
    let mut vectors = HashSet::new();
    let mut known: std::collections::HashMap<&str, Option<BTreeSet<String>>> = Default::default();
    for (i, vector) in config.feature_vectors.iter().enumerate() {
        let at = format!("feature_vector[{i}]");
        if !vectors.insert(vector.name.as_str()) {
            report(
                format!("{at}.name"),
                format!("feature vector \"{}\" is defined twice", vector.name),
            );
        }
        if vector.features.is_empty() {
            report(format!("{at}.features"), "expected at least one \"set:feature\"".into());
        }
        check_features(config, &vector.features, &format!("{at}.features"), &mut known, report);
    }
    let mut models = HashSet::new();
    for (i, model) in config.models.iter().enumerate() {
        let at = format!("model[{i}]");
        check_name(&model.name, format!("{at}.name"), report);
        if !models.insert(model.name.as_str()) {
            report(
                format!("{at}.name"),
                format!("model \"{}\" is defined twice", model.name),
            );
        }
        match (&model.vector, model.features.is_empty()) {
            (Some(vector), true) => {
                if !config.feature_vectors.iter().any(|v| &v.name == vector) {
                    let known: Vec<&str> = config.feature_vectors.iter().map(|v| v.name.as_str()).collect();
                    report(
                        format!("{at}.vector"),
                        format!("no feature vector \"{vector}\" (defined: {})", list_or_none(&known)),
                    );
                }
            }
            (None, false) => check_features(config, &model.features, &format!("{at}.features"), &mut known, report),
            _ => report(
                format!("{at}.vector"),
                "expected exactly one of vector = \"<[[feature_vector]] name>\" and features = [\"set:feature\", ...]"
                    .into(),
            ),
        }
        if model.predictions.is_empty() {
            report(
                format!("{at}.predictions"),
                "expected at least one prediction field and its type, e.g. { score = \"float\" }".into(),
            );
        }
        for (key, fields) in [("predictions", &model.predictions), ("labels", &model.labels)] {
            for field in fields.keys() {
                if field.is_empty() || RESERVED.contains(&field.as_str()) {
                    report(
                        format!("{at}.{key}.{field}"),
                        format!("{field:?}: expected a field name other than {}", RESERVED.join(", ")),
                    );
                }
            }
        }
        if let Some(field) = model.labels.keys().find(|f| model.predictions.contains_key(*f)) {
            report(
                format!("{at}.labels.{field}"),
                format!("{field:?} is also a prediction field: expected labels and predictions named apart (a training set has a column of each)"),
            );
        }
        if let Some(Err(e)) = model.label_within.as_ref().map(|d| d.get()) {
            report(format!("{at}.label_within"), e.into());
        }
        if model.capture_one_in == 0 {
            report(
                format!("{at}.capture_one_in"),
                "expected 1 (capture every lookup) or more (one in that many)".into(),
            );
        }
    }
    let mut names = HashSet::new();
    for (i, token) in config.tokens.iter().enumerate() {
        let at = format!("token[{i}]");
        if !names.insert(token.name.as_str()) {
            report(
                format!("{at}.name"),
                format!("token name \"{}\" is used twice", token.name),
            );
        }
        if token.sha256.len() != 64 || !token.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            report(
                format!("{at}.sha256"),
                "expected the token's SHA-256 as 64 hex digits (`sluice token new` prints it); never the token".into(),
            );
        }
        if token.scopes.is_empty() {
            report(
                format!("{at}.scopes"),
                "expected at least one of read, ingest, capture, deploy, admin".into(),
            );
        }
        for set in &token.sets {
            if !config.feature_sets.iter().any(|s| &s.name == set) {
                report(format!("{at}.sets"), format!("no feature set \"{set}\""));
            }
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Reports `name` at `key` unless it is 1-64 characters of a-z, 0-9, `_` or `-`.
fn check_name(name: &str, key: String, report: &mut impl FnMut(String, String)) {
    if !valid_name(name) {
        report(
            key,
            format!("{name:?}: expected 1-64 characters of a-z, 0-9, '_' or '-'"),
        );
    }
}

fn check_set(config: &Config, set: &FeatureSetConfig, at: &str, report: &mut impl FnMut(String, String)) {
    check_name(&set.name, format!("{at}.name"), report);
    if set.entity.is_empty() || set.entity.iter().any(String::is_empty) {
        report(
            format!("{at}.entity"),
            "expected the field (or list of fields) holding the entity key".into(),
        );
    }
    if set.timestamp.field.is_empty() {
        report(
            format!("{at}.timestamp.field"),
            "expected the field holding the event time".into(),
        );
    } else if !set.fields.is_empty() && !set.fields.contains(&set.timestamp.field) {
        report(
            format!("{at}.timestamp.field"),
            format!(
                "\"{}\" is not among the declared fields ({}): every event would fail",
                set.timestamp.field,
                set.fields.join(", ")
            ),
        );
    }
    for key in set
        .entity
        .iter()
        .filter(|k| !k.is_empty() && !set.fields.is_empty() && !set.fields.contains(k))
    {
        report(
            format!("{at}.entity"),
            format!("\"{key}\" is not among the declared fields ({})", set.fields.join(", ")),
        );
    }
    if let Err(e) = crate::event_time::TimeReader::new(set.timestamp.format.clone(), set.timestamp.timezone.as_deref())
    {
        report(format!("{at}.timestamp.{}", e.key()), e.to_string());
    }
    if let Some(lateness) = &set.allowed_lateness {
        if let Err(e) = lateness.get() {
            report(format!("{at}.allowed_lateness"), e.into());
        }
    }
    if let Some(ttl) = &set.ttl {
        if let Err(e) = ttl.get() {
            report(format!("{at}.ttl"), e.into());
        }
    }
    if let Some(monitor) = &set.monitor {
        check_monitor(monitor, &format!("{at}.monitor"), report);
    }
    check_source(config, set, at, report);
    let fields = check_steps(config, set, at, report);
    if let (Some(monitor), Some(fields)) = (&set.monitor, &fields) {
        if let Err(e) = refuse_unknown(&set.name, monitor.segments.iter().map(String::as_str), fields) {
            report(format!("{at}.monitor.segments"), e.to_string());
        }
    }
    check_targets(set, at, report);
}

/// The set's source: a stream, a file or another set's rows.
fn check_source(config: &Config, set: &FeatureSetConfig, at: &str, report: &mut impl FnMut(String, String)) {
    match &set.source {
        SourceConfig::Jetstream {
            stream, subject, batch, ..
        } => {
            if stream.is_empty() || stream.contains(['.', ' ', '*', '>']) {
                report(
                    format!("{at}.source.stream"),
                    format!("{stream:?}: expected a stream name without '.', ' ', '*' or '>'"),
                );
            }
            if subject.is_empty() {
                report(
                    format!("{at}.source.subject"),
                    "expected the subject events are published on".into(),
                );
            }
            if !(1..=10_000).contains(batch) {
                report(
                    format!("{at}.source.batch"),
                    format!("{batch}: expected 1 to 10000 messages per batch"),
                );
            }
        }
        SourceConfig::File { path, format, batch } => {
            if format.is_none() && super::FileFormat::of(path).is_none() {
                report(
                    format!("{at}.source.format"),
                    format!(
                        "{}: cannot tell the format from the extension; set format = \"jsonl\", \"csv\" or \"parquet\"",
                        path.display()
                    ),
                );
            }
            if *batch == 0 {
                report(
                    format!("{at}.source.batch"),
                    "expected at least 1 event per batch".into(),
                );
            }
        }
        SourceConfig::FeatureSet {
            name, version, batch, ..
        } => {
            match config.upstream(name, *version) {
                None => report(
                    format!("{at}.source.name"),
                    format!(
                        "no feature set \"{name}\"{} in this config",
                        version.map(|v| format!(" version {v}")).unwrap_or_default()
                    ),
                ),
                Some(up) if up.name == set.name && up.version == set.version => report(
                    format!("{at}.source.name"),
                    "a feature set cannot read its own rows".into(),
                ),
                Some(up) if Config::stream_target(up).is_none() => report(
                    format!("{at}.source.name"),
                    format!(
                        "feature set \"{name}\" has no stream target to read: add a `kind = \"stream\"` target to it"
                    ),
                ),
                Some(_) => {}
            }
            if !(1..=10_000).contains(batch) {
                report(
                    format!("{at}.source.batch"),
                    format!("{batch}: expected 1 to 10000 messages per batch"),
                );
            }
        }
    }
}

/// Refuses the names of `asked` that are not among a set's `known` features, each with the
/// nearest known names (by edit distance), so a typo is told at once instead of read as null.
pub fn refuse_unknown<'a>(
    set: &str,
    asked: impl IntoIterator<Item = &'a str>,
    known: &BTreeSet<String>,
) -> Result<(), crate::fault::Invalid> {
    let unknown: Vec<String> = asked
        .into_iter()
        .filter(|name| !known.contains(*name))
        .map(|name| {
            let mut near: Vec<(usize, &String)> = known
                .iter()
                .map(|k| (strsim::damerau_levenshtein(name, k), k))
                .filter(|(d, k)| *d <= (k.len().max(name.len()) / 3).max(2))
                .collect();
            near.sort();
            match near.first() {
                Some((_, k)) => format!("\"{name}\" (did you mean \"{k}\"?)"),
                None => format!("\"{name}\""),
            }
        })
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let all: Vec<&str> = known.iter().map(String::as_str).collect();
    Err(crate::invalid!(
        "feature set \"{set}\" has no feature {}; its features: {}",
        unknown.join(", "),
        all.join(", ")
    ))
}

/// The fields a feature set's rows have after its last step (its features, with the entity
/// and time fields and each plugin's `<step>_version`), when they are known: the input
/// fields are declared and every plugin declares what it adds. `None` otherwise.
pub fn output_fields(config: &Config, set: &FeatureSetConfig) -> Option<BTreeSet<String>> {
    check_steps(config, set, "", &mut |_, _| {})
}

/// Each step checks itself (`StepSpec::resolve`, in its own file) against the fields known
/// before it: known when the input fields are declared, unknown after a plugin that does not
/// declare what it adds. Returns the fields known after the last step.
fn check_steps(
    config: &Config,
    set: &FeatureSetConfig,
    at: &str,
    report: &mut impl FnMut(String, String),
) -> Option<BTreeSet<String>> {
    let mut known: Option<BTreeSet<String>> = (!set.fields.is_empty()).then(|| set.fields.iter().cloned().collect());
    let mut ids = HashSet::new();
    for (j, step) in set.steps.iter().enumerate() {
        let key = format!("{at}.steps[{j}]");
        check_name(&step.id, format!("{key}.id"), report);
        if !ids.insert(step.id.clone()) {
            report(
                format!("{key}.id"),
                format!("step id \"{}\" is used twice in this feature set", step.id),
            );
        }
        let mut problems = Vec::new();
        let mut resolve = Resolve::new((key, &step.id), (set.facts(), config), &mut known, &mut problems);
        step.kind.spec().resolve(&mut resolve);
        for (key, message) in problems {
            report(key, message);
        }
    }
    known
}

fn check_monitor(monitor: &crate::monitor::live::MonitorConfig, at: &str, report: &mut impl FnMut(String, String)) {
    match monitor.window.get() {
        Err(e) => report(format!("{at}.window"), e.into()),
        Ok(d) if d.is_zero() => report(format!("{at}.window"), "a window cannot be empty".into()),
        Ok(_) => {}
    }
    if let Some(Err(e)) = monitor.reference.as_deref().map(crate::monitor::reference::check_name) {
        report(format!("{at}.reference"), e.into());
    }
    if monitor.segments.len() > 2 {
        report(
            format!("{at}.segments"),
            format!("expected one or two fields, found {}", monitor.segments.len()),
        );
    }
    if !monitor.segments.is_empty() && monitor.reference.is_none() {
        report(
            format!("{at}.segments"),
            "segments are judged against the reference's own segments: name a reference too".into(),
        );
    }
    if !(1..=100).contains(&monitor.max_segments) {
        report(
            format!("{at}.max_segments"),
            format!("expected 1 to 100, found {}", monitor.max_segments),
        );
    }
    let p = &monitor.policy;
    let metrics = [
        ("psi", p.psi),
        ("jensen_shannon", p.jensen_shannon),
        ("hellinger", p.hellinger),
        ("tvd", p.tvd),
        ("ks", p.ks),
    ];
    for (name, t) in metrics.iter().filter_map(|(n, t)| Some((n, (*t)?))) {
        if !(t.possible >= 0.0 && t.possible <= t.drift) {
            report(
                format!("{at}.policy.{name}"),
                format!(
                    "expected 0 <= possible <= drift, found possible = {} and drift = {}",
                    t.possible, t.drift
                ),
            );
        }
    }
}

fn check_targets(set: &FeatureSetConfig, at: &str, report: &mut impl FnMut(String, String)) {
    let mut kinds = HashSet::new();
    for (k, target) in set.targets.iter().enumerate() {
        if !kinds.insert(target.name()) {
            report(
                format!("{at}.targets[{k}]"),
                format!(
                    "a second \"{}\" target: one of each kind per feature set",
                    target.name()
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::refuse_unknown;

    #[test]
    fn an_unknown_name_is_refused_with_the_nearest_known_one() {
        let known = ["ctr_1h", "clicks_5m", "user_id"]
            .map(String::from)
            .into_iter()
            .collect();
        assert!(refuse_unknown("clicks", ["ctr_1h", "user_id"], &known).is_ok());
        let e = refuse_unknown("clicks", ["ctr_1hh", "zzzzzzzz"], &known).unwrap_err().0;
        assert!(e.contains("\"ctr_1hh\" (did you mean \"ctr_1h\"?)"), "{e}");
        assert!(e.contains(", \"zzzzzzzz\";"), "{e}");
        assert!(e.contains("its features: clicks_5m, ctr_1h, user_id"), "{e}");
    }
}

/// The fields a capture record, prediction or label carries itself.
pub const RESERVED: &[&str] = &["request_id", "model", "kind", "entity", "at", "captured_at"];

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// Checks `set:feature` entries against the sets' output fields (`known` caches them per set).
fn check_features<'a>(
    config: &'a Config,
    features: &[String],
    at: &str,
    known: &mut std::collections::HashMap<&'a str, Option<BTreeSet<String>>>,
    report: &mut impl FnMut(String, String),
) {
    for feature in features {
        match feature.split_once(':') {
            Some((set, name)) => match config.upstream(set, None) {
                // The set's features, resolved once per set for every vector naming it.
                Some(defined) => {
                    let fields = known
                        .entry(defined.name.as_str())
                        .or_insert_with(|| output_fields(config, defined));
                    if let Some(Err(e)) = fields
                        .as_ref()
                        .filter(|_| name != "*")
                        .map(|k| refuse_unknown(set, [name], k))
                    {
                        report(at.to_string(), e.to_string());
                    }
                }
                None => report(at.to_string(), format!("{feature:?}: no feature set \"{set}\"")),
            },
            None => report(
                at.to_string(),
                format!("{feature:?}: expected \"set:feature\" or \"set:*\""),
            ),
        }
    }
}
