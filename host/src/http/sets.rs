//! Feature sets over HTTP: `GET /v1/feature-sets[/{name}]` (definition, aggregates, counters,
//! consumer lag); `PUT /v1/feature-sets/{name}` applies a definition: validated with the rest
//! of the config, stored under `<data_dir>/feature_sets` (a restart runs it), and started
//! beside the running versions (a new version never touches an old one's data); `POST
//! /v1/feature-sets/{name}/serve/{version}` switches lookups and ingest to a running version;
//! `GET /v1/feature-sets/{name}/dead-letters` pages through its dead letters and late events.

use std::path::Path as FsPath;

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value as Json};

use axum::body::Bytes;
use axum::extract::Query;
use serde::Deserialize;

use super::{Api, ApiError, ServedSet};
use crate::catalog::write_atomically;
use crate::config::{FeatureSetConfig, Scope, SourceConfig};

/// Messages not yet delivered to a set's consumer, and delivered but not acknowledged
/// (stream sources).
pub(crate) async fn consumer_lag(api: &Api, set: &FeatureSetConfig) -> Option<(u64, usize)> {
    let (SourceConfig::Jetstream { stream, subject, .. }, Some(bus)) = (&set.source, &api.bus) else {
        return None;
    };
    let durable = format!("sluice-{}-v{}", set.name, set.version);
    bus.lag(stream, subject, &durable).await
}

async fn describe_one(api: &Api, set: &FeatureSetConfig) -> Json {
    let source = match &set.source {
        SourceConfig::Jetstream { stream, subject, .. } => {
            json!({ "kind": "jetstream", "stream": stream, "subject": subject })
        }
        SourceConfig::File { path, .. } => json!({ "kind": "file", "path": path }),
        SourceConfig::FeatureSet { name, version, .. } => {
            json!({ "kind": "feature_set", "name": name, "version": version })
        }
    };
    let lag = consumer_lag(api, set).await.map_or(
        Json::Null,
        |(pending, unacknowledged)| json!({ "pending": pending, "unacknowledged": unacknowledged }),
    );
    let label = format!("{}@v{}", set.name, set.version);
    let m = api.metrics.set(&label);
    let aggregates: Vec<Json> = set
        .aggregate_types()
        .into_iter()
        .map(|(name, integer)| json!({ "name": name, "type": if integer { "integer" } else { "float" } }))
        .collect();
    json!({
        "name": set.name,
        "version": set.version,
        "serving": api.served.load().get(&set.name).is_some_and(|s| s.version == set.version),
        "entity": set.entity,
        "timestamp": set.timestamp.field,
        "ttl": set.ttl,
        "allowed_lateness": set.allowed_lateness,
        "input_fields": set.fields,
        "source": source,
        "steps": set.steps.iter().map(|s| json!({ "id": s.id, "kind": s.kind.name() })).collect::<Vec<_>>(),
        "targets": set.targets.iter().map(|t| t.name()).collect::<Vec<_>>(),
        // Where its feature rows are published: the declared stream target, or the stream
        // Sluice makes for a Parquet target's writer (`SLUICE_ROWS_<set>_v<version>`).
        "row_stream": crate::config::Config::stream_target(set).map(|(stream, subject, _)| json!({
            "stream": stream,
            "subject": subject,
            "declared": set.targets.iter().any(|t| matches!(t, crate::config::TargetConfig::Stream { .. })),
        })),
        "aggregates": aggregates,
        "counters": {
            "events_in": m.events_in.get(),
            "rows_out": m.rows_out.get(),
            "failed": m.failed.get(),
            "late": m.late.get(),
            "filtered": set.steps.iter()
                .filter(|s| matches!(s.kind, crate::steps::StepKind::Filter(_)))
                .map(|s| (s.id.clone(), json!(api.metrics.filtered(&label, &s.id).get())))
                .collect::<serde_json::Map<String, Json>>(),
        },
        "lag": lag,
    })
}

fn json_body(body: Json) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// `GET /v1/feature-sets`: every version the token may read.
pub(crate) async fn list(State(api): State<Arc<Api>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let token = api.allow(&headers, Scope::Read, None)?;
    let mut sets = Vec::new();
    for set in api.definitions.load().iter() {
        if token.allows(Scope::Read, Some(&set.name)).is_ok() {
            sets.push(describe_one(&api, set).await);
        }
    }
    Ok(json_body(json!({ "feature_sets": sets })))
}

/// `GET /v1/feature-sets/{name}`: its versions.
pub(crate) async fn describe(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    api.allow(&headers, Scope::Read, Some(&name))?;
    let mut versions = Vec::new();
    for set in api.definitions.load().iter().filter(|s| s.name == name) {
        versions.push(describe_one(&api, set).await);
    }
    if versions.is_empty() {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no feature set \"{name}\"")));
    }
    Ok(json_body(json!({ "name": name, "versions": versions })))
}

/// A definition to start in the running pipeline; the answer says whether it started.
pub struct Apply {
    /// The whole config with the new definition in it.
    pub config: crate::config::Config,
    /// The new definition.
    pub set: FeatureSetConfig,
    /// Started, or why not.
    pub done: tokio::sync::oneshot::Sender<Result<(), crate::runtime::PipelineError>>,
}

#[derive(Deserialize)]
pub(crate) struct ApplyQuery {
    #[serde(default)]
    serve: bool,
}

/// A definition in TOML or JSON, for the feature set the path names: the set's own table
/// (`name = …`, `[source]`, `[[steps]]`) or, as the config file writes it, a `[[feature_set]]`
/// table (`{"feature_set": [...]}` in JSON) holding that one set. Returns it with the TOML
/// the catalog stores (its own table, whatever form came in).
fn parse_definition(name: &str, text: &str) -> Result<(FeatureSetConfig, String), ApiError> {
    let bad = |e: String| ApiError::bad_request(format!("not a feature set definition: {e}"));
    let mut table: toml::Table = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| bad(e.to_string()))?
    } else {
        toml::from_str(text).map_err(|e| bad(e.to_string()))?
    };
    if let Some(listed) = table.remove("feature_set") {
        let toml::Value::Array(mut sets) = listed else {
            return Err(bad("`feature_set` must be an array of tables ([[feature_set]])".into()));
        };
        let extra: Vec<&String> = table.keys().collect();
        if !extra.is_empty() {
            return Err(bad(format!(
                "expected only [[feature_set]] beside it, found {extra:?}: plugins, tokens and \
                 the host are the server's own config"
            )));
        }
        if sets.len() != 1 {
            return Err(bad(format!("expected one [[feature_set]], found {}", sets.len())));
        }
        table = match sets.pop() {
            Some(toml::Value::Table(set)) => set,
            _ => return Err(bad("`feature_set` must hold a table".into())),
        };
    }
    let set: FeatureSetConfig = toml::Value::Table(table.clone())
        .try_into()
        .map_err(|e: toml::de::Error| bad(e.to_string()))?;
    if set.name != name {
        return Err(ApiError::bad_request(format!(
            "the definition names feature set \"{}\", the path \"{name}\"",
            set.name
        )));
    }
    let canonical = toml::to_string(&table).map_err(|e| bad(e.to_string()))?;
    Ok((set, canonical))
}

/// Stores a definition as TOML in the catalog (restored at the next start); returns its file.
fn store_definition(data_dir: &FsPath, set: &FeatureSetConfig, as_toml: &str) -> Result<std::path::PathBuf, ApiError> {
    let file = crate::catalog::definitions_dir(data_dir).join(format!("{}-v{}.toml", set.name, set.version));
    write_atomically(&file, as_toml.as_bytes()).map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("storing the definition: {e}"),
        )
    })?;
    Ok(file)
}

/// `PUT /v1/feature-sets/{name}[?serve=true]`.
pub(crate) async fn apply(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    Query(query): Query<ApplyQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let token = api.allow(&headers, Scope::Admin, Some(&name))?.name.clone();
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("the definition is not UTF-8"))?;
    let (set, canonical) = parse_definition(&name, text)?;
    let running = api.definitions.load();
    if running.iter().any(|s| s.name == set.name && s.version == set.version) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "feature set \"{name}\" version {} is already running: give the new definition a new version",
                set.version
            ),
        ));
    }
    let mut config = api.base.clone();
    config.feature_sets = running.iter().cloned().chain([set.clone()]).collect();
    // Plugins deployed over HTTP (PUT /v1/plugins/{name}) are usable by name, as the
    // config's own are: validated against a config that lists them too.
    let mut with_deployed = config.clone();
    for plugin in api.registry.iter().flat_map(|r| r.list()) {
        let name = plugin.name.to_string();
        with_deployed
            .plugins
            .entry(name)
            .or_insert_with(|| "(deployed over HTTP)".into());
    }
    let problems = crate::config::validate(&with_deployed);
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(|p| format!("{}: {}", p.key, p.message)).collect();
        return Err(ApiError::bad_request(format!(
            "invalid definition: {}",
            list.join("; ")
        )));
    }
    let Some(control) = &api.control else {
        return Err(ApiError(StatusCode::CONFLICT, "this server runs no pipelines".into()));
    };
    let data_dir = config.resolve(&config.host.data_dir);
    let file = store_definition(&data_dir, &set, &canonical)?;
    let (done, started) = tokio::sync::oneshot::channel();
    control
        .send(Apply {
            config: config.clone(),
            set: set.clone(),
            done,
        })
        .await
        .map_err(|_| ApiError(StatusCode::SERVICE_UNAVAILABLE, "the pipeline is stopping".into()))?;
    let outcome = started
        .await
        .map_err(|_| ApiError(StatusCode::SERVICE_UNAVAILABLE, "the pipeline is stopping".into()))?;
    if let Err(e) = outcome {
        let _ = std::fs::remove_file(&file);
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("could not start: {e}"),
        ));
    }
    api.definitions.store(Arc::new(config.feature_sets.clone()));
    tracing::info!(set = %name, version = set.version, token = %token, "feature set applied over HTTP");
    if query.serve || api.served.load().get(&name).is_none() {
        switch(&api, &set, &data_dir)?;
    }
    let described = describe_one(&api, &set).await;
    Ok((
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        described.to_string(),
    )
        .into_response())
}

/// Makes `set` the served version of its name (and remembers it across restarts).
fn switch(api: &Api, set: &FeatureSetConfig, data_dir: &FsPath) -> Result<(), ApiError> {
    let served = ServedSet::new(&api.base, set).map_err(ApiError::bad_request)?;
    write_atomically(
        &crate::catalog::definitions_dir(data_dir).join(format!("{}.serving", set.name)),
        set.version.to_string().as_bytes(),
    )
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("storing the choice: {e}")))?;
    let mut map = (**api.served.load()).clone();
    map.insert(set.name.clone(), Arc::new(served));
    api.served.store(Arc::new(map));
    Ok(())
}

/// `POST /v1/feature-sets/{name}/serve/{version}`.
pub(crate) async fn serve(
    State(api): State<Arc<Api>>,
    Path((name, version)): Path<(String, u32)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = api.allow(&headers, Scope::Admin, Some(&name))?.name.clone();
    let definitions = api.definitions.load();
    let set = definitions
        .iter()
        .find(|s| s.name == name && s.version == version)
        .ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!("feature set \"{name}\" runs no version {version}"),
            )
        })?;
    switch(&api, set, &api.base.resolve(&api.base.host.data_dir))?;
    tracing::info!(set = %name, version, token = %token, "feature set version now served");
    Ok(json_body(describe_one(&api, set).await))
}

/// The query of `GET /v1/feature-sets/{name}/dead-letters`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LettersQuery {
    /// `dlq` (default) or `late`.
    kind: Option<String>,
    /// Messages after this sequence (default 0: from the start).
    after: Option<u64>,
    /// At most this many (default 100, at most 1000).
    limit: Option<usize>,
}

/// `GET /v1/feature-sets/{name}/dead-letters[?kind=late&after=N&limit=M]`: the events a
/// feature set could not process (or refused as late), with their original bytes and why.
/// Pages with `after` = the last `seq` seen.
pub(crate) async fn dead_letters(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    Query(query): Query<LettersQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    api.allow(&headers, Scope::Admin, Some(&name))?;
    if !api.definitions.load().iter().any(|s| s.name == name) {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no feature set \"{name}\"")));
    }
    let (kind, stream) = match query.kind.as_deref().unwrap_or("dlq") {
        "dlq" => ("dlq", crate::targets::dlq::DLQ_STREAM),
        "late" => ("late", crate::targets::dlq::LATE_STREAM),
        other => {
            return Err(ApiError::bad_request(format!(
                "kind {other:?}: expected \"dlq\" (events that failed) or \"late\" (events later than the allowed lateness)"
            )))
        }
    };
    let Some(bus) = &api.bus else {
        return Err(ApiError(StatusCode::CONFLICT, "this server has no message bus".into()));
    };
    let subject = format!("sluice.{kind}.{name}");
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let messages = bus
        .read(stream, &subject, query.after.unwrap_or(0), limit)
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let header = |m: &crate::store::embedded::LogMessage, name: &str| {
        m.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let items: Vec<Json> = messages
        .iter()
        .map(|m| {
            json!({
                "seq": m.seq,
                "reason": header(m, "Sluice-Reason"),
                "step": header(m, "Sluice-Step"),
                "input_seq": header(m, "Sluice-Seq").and_then(|s| s.parse::<u64>().ok()),
                "version": header(m, "Sluice-Version").and_then(|s| s.parse::<u32>().ok()),
                "body": String::from_utf8_lossy(&m.body),
            })
        })
        .collect();
    let body = json!({
        "set": name,
        "kind": kind,
        "messages": items,
        "next_after": messages.last().map(|m| m.seq),
    });
    Ok(([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response())
}
