//! Online lookups: `GET /v1/features/{set}/{entity}` and `POST /v1/features/lookup`. Values
//! come from Redis with windowed aggregates evaluated as of the request time (or `at`); each
//! carries a status: `present`, `null`, `not_found` (the entity or the feature is unknown) or
//! `outside_max_age` (its event is older than the set's TTL at the time asked).

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Map, Value as Json};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{Api, ApiError, ServedSet};
use crate::config::{Scope, TimeFormat};
use crate::event::{JsonValue, Value};
use crate::online::OnlineRow;
use crate::steps::aggregate::HashFields;

#[derive(Deserialize)]
pub(crate) struct At {
    at: Option<String>,
}

/// `at` as RFC 3339 text or epoch milliseconds; now when absent.
fn time_of(at: Option<&Json>) -> Result<i64, ApiError> {
    match at {
        None | Some(Json::Null) => Ok((OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64),
        Some(json) => crate::sources::decode::parse_time(Some(json), "at", TimeFormat::Auto)
            .map_err(ApiError::bad_request)
            .map(|t| t.unwrap_or(0)),
    }
}

fn rfc3339(us: i64) -> Json {
    OffsetDateTime::from_unix_timestamp_nanos(us as i128 * 1000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .map_or(Json::Null, Json::String)
}

/// One feature's answer.
fn answer(value: Option<&Value>, stale: bool, time: Option<i64>) -> Json {
    let (value, status) = match value {
        None => (Json::Null, "not_found"),
        Some(_) if stale => (Json::Null, "outside_max_age"),
        Some(Value::Null) => (Json::Null, "null"),
        Some(v) => (serde_json::to_value(JsonValue(v)).unwrap_or(Json::Null), "present"),
    };
    let mut out = Map::with_capacity(3);
    out.insert("value".into(), value);
    out.insert("status".into(), status.into());
    if let Some(t) = time {
        out.insert("event_time".into(), rfc3339(t));
    }
    Json::Object(out)
}

/// Reads (set, entity) pairs in one pipelined round trip; rows evaluated at `at`.
async fn read(api: &Api, pairs: &[(&ServedSet, &str)], at: i64) -> Result<Vec<Option<OnlineRow>>, ApiError> {
    let mut pipe = redis::pipe();
    for (set, entity) in pairs {
        pipe.cmd("HGETALL").arg(set.view.hash(entity));
    }
    let mut redis = api.redis.clone();
    let found: Vec<HashFields> = pipe.query_async(&mut redis).await.map_err(|e| {
        api.metrics.lookup_errors.fetch_add(1, Relaxed);
        ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("Redis: {e}"))
    })?;
    pairs
        .iter()
        .zip(found)
        .map(|((set, _), fields)| {
            set.view
                .evaluate(&fields, at)
                .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))
        })
        .collect()
}

fn stale(set: &ServedSet, row: &OnlineRow, at: i64) -> bool {
    set.max_age.is_some_and(|age| at - row.time > age)
}

fn json_response(body: Json) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// `GET /v1/features/{set}/{entity}?at=`: every feature of one entity.
pub(crate) async fn one(
    State(api): State<Arc<Api>>,
    Path((set_name, entity)): Path<(String, String)>,
    Query(query): Query<At>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    api.allow(&headers, Scope::Read, Some(&set_name))?;
    let set = api.set(&set_name)?;
    let at_json = query.at.map(|a| match a.parse::<i64>() {
        Ok(n) => Json::from(n),
        Err(_) => Json::String(a),
    });
    let at = time_of(at_json.as_ref())?;
    let row = read(&api, &[(set, &entity)], at).await?.pop().flatten();
    let mut features = Map::new();
    if let Some(row) = &row {
        let stale = stale(set, row, at);
        for (name, value) in &row.values {
            features.insert(name.clone(), answer(Some(value), stale, None));
        }
    }
    let body = json!({
        "set": set_name,
        "version": set.version,
        "entity": entity,
        "at": rfc3339(at),
        "found": row.is_some(),
        "event_time": row.as_ref().map_or(Json::Null, |r| rfc3339(r.time)),
        "features": features,
    });
    api.metrics.lookups.fetch_add(1, Relaxed);
    api.metrics.lookup_seconds.observe(started.elapsed());
    Ok(json_response(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Lookup {
    /// Entity keys.
    entities: Vec<String>,
    /// `set:feature` or `set:*`.
    features: Vec<String>,
    /// RFC 3339 text or epoch milliseconds; default now.
    #[serde(default)]
    at: Option<Json>,
}

/// Most (set, entity) pairs one request may read.
const MAX_PAIRS: usize = 10_000;

/// `POST /v1/features/lookup`: features of several sets for many entities, in one round trip.
pub(crate) async fn many(State(api): State<Arc<Api>>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let started = Instant::now();
    let request: Lookup = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "expected {{\"entities\": [\"...\"], \"features\": [\"set:feature\" or \"set:*\"], \"at\": optional}}: {e}"
        ))
    })?;
    // The sets asked for, in order, each with its features (`None`: all).
    let mut sets: Vec<(&str, Option<Vec<&str>>)> = Vec::new();
    for feature in &request.features {
        let Some((set, name)) = feature.split_once(':') else {
            return Err(ApiError::bad_request(format!(
                "feature {feature:?}: expected \"set:feature\" or \"set:*\""
            )));
        };
        let at = match sets.iter().position(|(s, _)| *s == set) {
            Some(at) => at,
            None => {
                sets.push((set, Some(Vec::new())));
                sets.len() - 1
            }
        };
        match (&mut sets[at].1, name) {
            (list, "*") => *list = None,
            (Some(list), name) => list.push(name),
            (None, _) => {}
        }
    }
    if sets.is_empty() || request.entities.is_empty() {
        return Err(ApiError::bad_request("expected at least one entity and one feature"));
    }
    if sets.len() * request.entities.len() > MAX_PAIRS {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("at most {MAX_PAIRS} (feature set, entity) pairs per request"),
        ));
    }
    let mut served = Vec::with_capacity(sets.len());
    for (name, _) in &sets {
        api.allow(&headers, Scope::Read, Some(name))?;
        served.push(api.set(name)?);
    }
    let at = time_of(request.at.as_ref())?;
    let pairs: Vec<(&ServedSet, &str)> = request
        .entities
        .iter()
        .flat_map(|e| served.iter().map(move |s| (*s, e.as_str())))
        .collect();
    let rows = read(&api, &pairs, at).await?;
    let mut results = Vec::with_capacity(request.entities.len());
    let mut rows = rows.into_iter();
    for entity in &request.entities {
        let mut features = Map::new();
        let mut times = HashMap::new();
        for ((name, wanted), set) in sets.iter().zip(&served) {
            let row = rows.next().flatten();
            let stale = row.as_ref().is_some_and(|r| stale(set, r, at));
            let time = row.as_ref().map(|r| r.time);
            if let Some(t) = time {
                times.insert(*name, rfc3339(t));
            }
            match (wanted, &row) {
                (Some(list), _) => {
                    for feature in list {
                        let value = row.as_ref().and_then(|r| r.values.get(*feature));
                        features.insert(format!("{name}:{feature}"), answer(value, stale, time));
                    }
                }
                (None, Some(row)) => {
                    for (feature, value) in &row.values {
                        features.insert(format!("{name}:{feature}"), answer(Some(value), stale, time));
                    }
                }
                (None, None) => {}
            }
        }
        results.push(json!({ "entity": entity, "found": times, "features": features }));
    }
    api.metrics.lookups.fetch_add(1, Relaxed);
    api.metrics.lookup_seconds.observe(started.elapsed());
    Ok(json_response(json!({ "at": rfc3339(at), "results": results })))
}
