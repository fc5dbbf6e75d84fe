//! Feature sets over HTTP (read-only for now): `GET /v1/feature-sets` and
//! `GET /v1/feature-sets/{name}`: definition, aggregates, counters and consumer lag.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value as Json};

use super::{Api, ApiError};
use crate::config::{FeatureSetConfig, Scope, SourceConfig};
use crate::steps::aggregate::AggregateSpec;

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
    // Messages not yet delivered to the set's consumer (JetStream sources).
    let lag = match (&set.source, &api.js) {
        (SourceConfig::Jetstream { stream, .. }, Some(js)) => {
            let durable = format!("sluice-{}-v{}", set.name, set.version);
            match js.get_stream(stream).await {
                Ok(stream) => match stream
                    .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&durable)
                    .await
                {
                    Ok(mut consumer) => consumer.info().await.map_or(
                        Json::Null,
                        |i| json!({ "pending": i.num_pending, "unacknowledged": i.num_ack_pending }),
                    ),
                    Err(_) => Json::Null,
                },
                Err(_) => Json::Null,
            }
        }
        _ => Json::Null,
    };
    let label = format!("{}@v{}", set.name, set.version);
    let m = api.metrics.set(&label);
    let aggregates: Vec<Json> = AggregateSpec::types_of(set)
        .into_iter()
        .map(|(name, integer)| json!({ "name": name, "type": if integer { "integer" } else { "float" } }))
        .collect();
    json!({
        "name": set.name,
        "version": set.version,
        "serving": api.sets.get(&set.name).is_some_and(|s| s.version == set.version),
        "entity": set.entity,
        "timestamp": set.timestamp.field,
        "ttl": set.ttl,
        "allowed_lateness": set.allowed_lateness,
        "input_fields": set.fields,
        "source": source,
        "steps": set.steps.iter().map(|s| json!({ "id": s.id, "kind": s.kind.name() })).collect::<Vec<_>>(),
        "targets": set.targets.iter().map(|t| t.name()).collect::<Vec<_>>(),
        "aggregates": aggregates,
        "counters": {
            "events_in": m.events_in.load(Relaxed),
            "rows_out": m.rows_out.load(Relaxed),
            "failed": m.failed.load(Relaxed),
            "late": m.late.load(Relaxed),
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
    for set in &api.definitions {
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
    for set in api.definitions.iter().filter(|s| s.name == name) {
        versions.push(describe_one(&api, set).await);
    }
    if versions.is_empty() {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no feature set \"{name}\"")));
    }
    Ok(json_body(json!({ "name": name, "versions": versions })))
}
