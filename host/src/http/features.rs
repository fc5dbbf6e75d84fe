//! Online lookups: `GET /v1/features/{set}/{entity}` and `POST /v1/features/lookup`. Values
//! come from the online store with windowed aggregates evaluated as of the request time (or `at`); each
//! carries a status: `present`, `null`, `not_found` (the entity is unknown), `outside_max_age`
//! (its event is older than the set's TTL at the time asked) or `unavailable_at`.
//!
//! The online store keeps each entity's latest row only, so it can answer `at` exactly when
//! that row's event time is at or before `at` (its windows then come from tiles that cover
//! them). A row written for a later event time cannot say what was true at `at`: a single
//! lookup is refused (409) and a many-entity lookup marks those values `unavailable_at`,
//! never a later value as `present`. Point-in-time values of the past come from a training
//! set. Unknown feature names are refused (400) with the nearest known names, when the set's
//! features are known (every step's output declared).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value as Json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{Api, ApiError, ServedSet};
use crate::config::{Scope, TimeFormat};
use crate::event::{JsonValue, Value};
use crate::online::OnlineRow;

#[derive(Deserialize)]
pub(crate) struct At {
    at: Option<String>,
}

/// `at` as RFC 3339 text or epoch milliseconds; now when absent.
fn time_of(at: Option<&Json>) -> Result<i64, ApiError> {
    match at {
        None | Some(Json::Null) => Ok((OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64),
        Some(json) => crate::sources::decode::parse_time(Some(json), "at", TimeFormat::EpochMs)
            .map_err(ApiError::bad_request)
            .map(|t| t.unwrap_or(0)),
    }
}

pub(crate) fn rfc3339(us: i64) -> Json {
    OffsetDateTime::from_unix_timestamp_nanos(us as i128 * 1000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .map_or(Json::Null, Json::String)
}

/// A JSON response written straight into its bytes: no tree of maps and values per feature.
struct Writer(Vec<u8>);

impl Writer {
    fn raw(&mut self, text: &str) -> &mut Self {
        self.0.extend_from_slice(text.as_bytes());
        self
    }

    fn string(&mut self, text: &str) -> &mut Self {
        let _ = serde_json::to_writer(&mut self.0, text);
        self
    }

    fn time(&mut self, us: i64) -> &mut Self {
        let _ = serde_json::to_writer(&mut self.0, &rfc3339(us));
        self
    }

    /// `"name":{"value":…,"status":…}` (the event time is given once per entity and set).
    fn feature(&mut self, set: Option<&str>, name: &str, value: Option<&Value>, row: RowState) {
        fn key(out: &mut Vec<u8>, text: &str) {
            if text.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
                let quoted = serde_json::to_string(text).unwrap_or_default();
                out.extend_from_slice(&quoted.as_bytes()[1..quoted.len() - 1]);
            } else {
                out.extend_from_slice(text.as_bytes());
            }
        }
        self.0.push(b'"');
        if let Some(set) = set {
            key(&mut self.0, set);
            self.0.push(b':');
        }
        key(&mut self.0, name);
        self.raw("\":{\"value\":");
        let status = match value {
            None => "not_found",
            Some(_) if row == RowState::Later => "unavailable_at",
            Some(_) if row == RowState::Stale => "outside_max_age",
            Some(Value::Null) => "null",
            Some(_) => "present",
        };
        match value {
            Some(v) if status == "present" => {
                let _ = serde_json::to_writer(&mut self.0, &JsonValue(v));
            }
            _ => {
                self.raw("null");
            }
        }
        self.raw(",\"status\":\"").raw(status).raw("\"}");
    }
}

/// Reads (set, entity) pairs in one round trip; rows evaluated at `at`.
async fn read(api: &Api, pairs: &[(&ServedSet, &str)], at: i64) -> Result<Vec<Option<OnlineRow>>, ApiError> {
    let hashes: Vec<String> = pairs.iter().map(|(set, entity)| set.view.hash(entity)).collect();
    let found = api.store.read(&hashes).await.map_err(|e| {
        api.metrics.lookup_errors.inc();
        ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    })?;
    pairs
        .iter()
        .zip(found)
        .map(|((set, _), fields)| {
            set.view
                .evaluate(&fields, Some(at))
                .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
        })
        .collect()
}

/// How a found row stands at the time asked.
#[derive(Debug, Clone, Copy, PartialEq)]
enum RowState {
    /// Its event time is at or before `at`, within the TTL: its values are those of `at`.
    Current,
    /// Older than the set's TTL at `at`.
    Stale,
    /// Written for an event after `at`: what held at `at` is not known online.
    Later,
}

fn state(set: &ServedSet, row: &OnlineRow, at: i64) -> RowState {
    if row.time > at {
        RowState::Later
    } else if set.max_age.is_some_and(|age| at - row.time > age) {
        RowState::Stale
    } else {
        RowState::Current
    }
}

/// Why an entity's row cannot answer a lookup as of `at`, and what to use instead.
fn later_than_at(set: &str, entity: &str, written: i64, at: i64) -> String {
    let time = crate::event_time::rfc3339;
    format!(
        "feature set \"{set}\" holds entity \"{entity}\" as of {} (its latest event), after at = {}: \
         the online store keeps only the latest values, so it cannot say what they were at an \
         earlier time. Ask without `at` (or with a later one) for the current values; for \
         point-in-time values of the past, build a training set (POST /v1/training-sets, or \
         sluice training-set)",
        time(written),
        time(at)
    )
}

fn json_response(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
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
    let row = read(&api, &[(&set, &entity)], at).await?.pop().flatten();
    if let Some(row) = row.as_ref().filter(|row| row.time > at) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            later_than_at(&set_name, &entity, row.time, at),
        ));
    }
    let mut out = Writer(Vec::with_capacity(1024));
    out.raw("{\"set\":").string(&set_name);
    out.raw(",\"version\":").raw(&set.version.to_string());
    out.raw(",\"entity\":").string(&entity);
    out.raw(",\"at\":").time(at);
    out.raw(",\"found\":").raw(if row.is_some() { "true" } else { "false" });
    out.raw(",\"event_time\":");
    match &row {
        Some(row) => out.time(row.time),
        None => out.raw("null"),
    };
    out.raw(",\"features\":{");
    if let Some(row) = &row {
        let state = state(&set, row, at);
        for (i, (name, value)) in row.values.iter().enumerate() {
            if i > 0 {
                out.raw(",");
            }
            out.feature(None, name, Some(value), state);
        }
    }
    out.raw("}}");
    api.metrics.lookups.inc();
    crate::metrics::observe(&api.metrics.lookup_seconds, started.elapsed());
    Ok(json_response(out.0))
}

/// A set a lookup asks for, with the features it asks of it (`None`: all of them).
type Asked<'a> = (&'a str, Option<Vec<&'a str>>);

/// The sets a lookup asks for, in order.
fn requested_sets<'a>(features: impl Iterator<Item = &'a String>) -> Result<Vec<Asked<'a>>, ApiError> {
    let mut sets: Vec<Asked<'a>> = Vec::new();
    for feature in features {
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
    Ok(sets)
}

/// The body of a many-entity lookup: per entity, when each set's row was written and the
/// features asked for.
fn write_many(
    entities: &[String],
    sets: &[Asked<'_>],
    served: &[Arc<ServedSet>],
    rows: Vec<Option<OnlineRow>>,
    at: i64,
) -> Vec<u8> {
    let mut out = Writer(Vec::with_capacity(256 * entities.len() * sets.len()));
    let mut later = false;
    out.raw("{\"at\":").time(at).raw(",\"results\":[");
    let mut rows = rows.into_iter();
    for (e, entity) in entities.iter().enumerate() {
        let these: Vec<Option<OnlineRow>> = rows.by_ref().take(sets.len()).collect();
        if e > 0 {
            out.raw(",");
        }
        out.raw("{\"entity\":").string(entity).raw(",\"found\":{");
        let mut first = true;
        for ((name, _), row) in sets.iter().zip(&these) {
            if let Some(row) = row {
                if !std::mem::take(&mut first) {
                    out.raw(",");
                }
                out.string(name).raw(":").time(row.time);
            }
        }
        out.raw("},\"features\":{");
        let mut first = true;
        for (((name, wanted), set), row) in sets.iter().zip(served).zip(&these) {
            let state = row.as_ref().map_or(RowState::Current, |r| state(set, r, at));
            later |= state == RowState::Later;
            let mut emit = |feature: &str, value: Option<&Value>| {
                if !std::mem::take(&mut first) {
                    out.raw(",");
                }
                out.feature(Some(name), feature, value, state);
            };
            match (wanted, row) {
                (Some(list), _) => {
                    for feature in list {
                        emit(feature, row.as_ref().and_then(|r| r.values.get(*feature)));
                    }
                }
                (None, Some(row)) => {
                    for (feature, value) in &row.values {
                        emit(feature, Some(value));
                    }
                }
                (None, None) => {}
            }
        }
        out.raw("}}");
    }
    out.raw("]");
    if later {
        out.raw(",\"unavailable_at\":").string(
            "a value marked unavailable_at belongs to a row written for an event after `at`: the \
             online store keeps only the latest values. Ask without `at` for the current ones; \
             for point-in-time values of the past, build a training set (POST /v1/training-sets)",
        );
    }
    out.raw("}");
    out.0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Lookup {
    /// Entity keys.
    entities: Vec<String>,
    /// `set:feature` or `set:*`.
    #[serde(default)]
    features: Vec<String>,
    /// A feature vector of the config, instead of (or beside) `features`.
    #[serde(default)]
    vector: Option<String>,
    /// RFC 3339 text or epoch milliseconds; default now.
    #[serde(default)]
    at: Option<Json>,
    /// Record this lookup as what a model was served (`[[model]]`).
    #[serde(default)]
    capture: Option<Capture>,
}

/// `"capture": {"model": "…", "request_id"?: "…"}` of a lookup.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Capture {
    model: String,
    /// The model server's id of the request (predictions and labels name it); one is made
    /// when absent and returned.
    #[serde(default)]
    request_id: Option<String>,
}

/// Most (set, entity) pairs one request may read.
const MAX_PAIRS: usize = 10_000;

/// Records a lookup's answer `out` as served to `model` (when its request id is sampled) and
/// adds `"capture": {"model", "request_id", "recorded"}` to the answer. The record is the
/// answer as sent, with the versions of the sets it read; it is queued for the bus, not
/// waited for.
fn captured(
    api: &Api,
    out: &mut Vec<u8>,
    (model, one_in, _): &(Arc<str>, u64, prometheus_client::metrics::histogram::Histogram),
    id: &str,
    sets: &[Asked<'_>],
    served: &[Arc<ServedSet>],
    vector: &Option<String>,
) {
    use std::io::Write;
    let sampled = crate::capture::sampled(id, *one_in);
    let mut recorded = false;
    if sampled {
        if let Some(recorder) = api.recorder() {
            let captured_at = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
            let mut record = Vec::with_capacity(out.len() + 64 * sets.len() + 160);
            record.extend_from_slice(b"{\"kind\":\"served\",\"model\":");
            let _ = serde_json::to_writer(&mut record, &**model);
            record.extend_from_slice(b",\"request_id\":");
            let _ = serde_json::to_writer(&mut record, id);
            let _ = write!(record, ",\"captured_at\":{captured_at},\"vector\":");
            let _ = serde_json::to_writer(&mut record, vector);
            record.extend_from_slice(b",\"versions\":{");
            for (i, ((name, _), set)) in sets.iter().zip(served).enumerate() {
                if i > 0 {
                    record.push(b',');
                }
                let _ = serde_json::to_writer(&mut record, name);
                let _ = write!(record, ":{}", set.version);
            }
            record.extend_from_slice(b"},\"served\":");
            record.extend_from_slice(out);
            record.push(b'}');
            recorded = recorder.record(model, record);
        }
    }
    if out.last() == Some(&b'}') {
        out.pop();
        out.extend_from_slice(b",\"capture\":{\"model\":");
        let _ = serde_json::to_writer(&mut *out, &**model);
        out.extend_from_slice(b",\"request_id\":");
        let _ = serde_json::to_writer(&mut *out, id);
        let _ = write!(out, ",\"sampled\":{sampled},\"recorded\":{recorded}}}}}");
    }
}

/// `POST /v1/features/lookup`: features of several sets for many entities, in one round trip.
pub(crate) async fn many(State(api): State<Arc<Api>>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let started = Instant::now();
    // Authenticated before the body is looked at; each set is checked below.
    let token = api.allow(&headers, Scope::Read, None)?;
    let request: Lookup = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "expected {{\"entities\": [\"...\"], \"features\": [\"set:feature\" or \"set:*\"] and/or \"vector\": \"name\", \"at\": optional, \"capture\": optional {{\"model\": \"name\", \"request_id\"?: \"...\"}}}}: {e}"
        ))
    })?;
    let capture = match &request.capture {
        None => None,
        Some(capture) => {
            let model = api.models.get(&capture.model).ok_or_else(|| {
                let mut known: Vec<&str> = api.models.keys().map(String::as_str).collect();
                known.sort();
                ApiError(
                    StatusCode::NOT_FOUND,
                    format!(
                        "capture.model: no model \"{}\" (declared: {})",
                        capture.model,
                        if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        }
                    ),
                )
            })?;
            let id = match &capture.request_id {
                Some(id) if id.is_empty() || id.len() > 256 => {
                    return Err(ApiError::bad_request(
                        "capture.request_id: expected text of 1 to 256 characters",
                    ))
                }
                Some(id) => id.clone(),
                None => crate::capture::new_request_id(),
            };
            Some((model.clone(), id))
        }
    };
    let vector: &[String] = match &request.vector {
        None => &[],
        Some(name) => api
            .vectors
            .get(name)
            .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no feature vector \"{name}\"")))?,
    };
    let sets = requested_sets(request.features.iter().chain(vector))?;
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
    for (name, wanted) in &sets {
        token.allows(Scope::Read, Some(name)).map_err(|d| api.refuse(d))?;
        let set = api.set(name)?;
        if let (Some(wanted), Some(known)) = (wanted, &set.features) {
            crate::config::refuse_unknown(name, wanted.iter().copied(), known)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
        }
        served.push(set);
    }
    let at = time_of(request.at.as_ref())?;
    let pairs: Vec<(&ServedSet, &str)> = request
        .entities
        .iter()
        .flat_map(|e| served.iter().map(move |s| (&**s, e.as_str())))
        .collect();
    let rows = read(&api, &pairs, at).await?;
    let mut out = write_many(&request.entities, &sets, &served, rows, at);
    if let Some((model, id)) = &capture {
        captured(&api, &mut out, model, id, &sets, &served, &request.vector);
    }
    api.metrics.lookups.inc();
    let took = started.elapsed();
    crate::metrics::observe(&api.metrics.lookup_seconds, took);
    if let Some(((_, _, latency), _)) = &capture {
        crate::metrics::observe(latency, took);
    }
    Ok(json_response(out))
}
