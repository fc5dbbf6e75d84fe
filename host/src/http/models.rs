//! Models over HTTP (`[[model]]`): `GET /v1/models` lists them; `POST
//! /v1/models/{model}/predictions` and `…/labels` store what a model predicted for a captured
//! request and the label that came later (scope `capture`); `GET …/captures` reads a model's
//! capture records back in order (admin). A lookup captures itself with `"capture": {"model":
//! …}` (see `features.rs`).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Map, Value as Json};

use super::{Api, ApiError};
use crate::capture::{message_id, subject, CAPTURE_STREAM};
use crate::config::{ModelConfig, Scope, ValueType};

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn json_body(status: StatusCode, body: Json) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A model of the config, or 404 naming those there are.
fn model<'a>(api: &'a Api, name: &str) -> Result<&'a ModelConfig, ApiError> {
    api.base.models.iter().find(|m| m.name == name).ok_or_else(|| {
        let known: Vec<&str> = api.base.models.iter().map(|m| m.name.as_str()).collect();
        ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "no model \"{name}\" (declared: {}); add a [[model]] table to the config",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        )
    })
}

fn types(fields: &std::collections::BTreeMap<String, ValueType>) -> Json {
    fields
        .iter()
        .map(|(k, t)| (k.clone(), Json::from(t.name())))
        .collect::<Map<_, _>>()
        .into()
}

/// `GET /v1/models`.
pub(crate) async fn list(State(api): State<Arc<Api>>, headers: HeaderMap) -> Result<Response, ApiError> {
    api.allow(&headers, Scope::Read, None)?;
    let models: Vec<Json> = api
        .base
        .models
        .iter()
        .map(|m| {
            json!({
                "name": m.name, "vector": m.vector, "features": m.features,
                "predictions": types(&m.predictions), "labels": types(&m.labels),
                "capture_one_in": m.capture_one_in,
                "captured": api.metrics.captured(&m.name).get(),
                "capture_lost": api.metrics.capture_lost(&m.name).get(),
                "accepted": {
                    "predictions": api.metrics.model_records(&m.name, "prediction").get(),
                    "labels": api.metrics.model_records(&m.name, "label").get(),
                },
            })
        })
        .collect();
    Ok(json_body(StatusCode::OK, json!({ "models": models })))
}

/// The objects of a body: one JSON object or an array of them (at most 10,000).
fn objects(body: &[u8], expected: &str) -> Result<Vec<Map<String, Json>>, ApiError> {
    let parsed: Json =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("expected {expected}: {e}")))?;
    let items = match parsed {
        Json::Object(one) => vec![one],
        Json::Array(many) => many
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                Json::Object(one) => Ok(one),
                _ => Err(ApiError::bad_request(format!(
                    "element {i} is not a JSON object: expected {expected}; nothing was stored"
                ))),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(ApiError::bad_request(format!("expected {expected}"))),
    };
    if items.is_empty() || items.len() > 10_000 {
        return Err(ApiError::bad_request(format!(
            "expected 1 to 10,000 objects: {expected}"
        )));
    }
    Ok(items)
}

/// Checks an item's declared fields (every one present, null allowed, of its type) and that
/// it has no other key than `allowed`.
fn check_fields(
    item: &Map<String, Json>,
    at: usize,
    fields: &std::collections::BTreeMap<String, ValueType>,
    allowed: &[&str],
) -> Result<(), ApiError> {
    let expected = || {
        let mut all: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        all.extend(fields.iter().map(|(k, t)| format!("{k} ({})", t.name())));
        all.join(", ")
    };
    for (key, value) in item {
        match fields.get(key) {
            Some(kind) if !kind.accepts(value) => {
                return Err(ApiError::bad_request(format!(
                    "item {at}: {key} = {value}: expected {}; nothing was stored",
                    kind.name()
                )))
            }
            Some(_) => {}
            None if allowed.contains(&key.as_str()) => {}
            None => {
                return Err(ApiError::bad_request(format!(
                    "item {at}: unknown field \"{key}\": expected {}; nothing was stored",
                    expected()
                )))
            }
        }
    }
    if let Some(missing) = fields.keys().find(|k| !item.contains_key(*k)) {
        return Err(ApiError::bad_request(format!(
            "item {at}: missing \"{missing}\" (null if unknown): expected {}; nothing was stored",
            expected()
        )));
    }
    Ok(())
}

/// An item's text field (`None` when absent).
fn text<'a>(item: &'a Map<String, Json>, key: &str, at: usize) -> Result<Option<&'a str>, ApiError> {
    match item.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) if !s.is_empty() && s.len() <= 256 => Ok(Some(s)),
        Some(other) => Err(ApiError::bad_request(format!(
            "item {at}: {key} = {other}: expected text of 1 to 256 characters; nothing was stored"
        ))),
    }
}

/// Publishes records of `kind`, each with its message id; 202 with how many were stored.
async fn store(
    api: &Api,
    model: &ModelConfig,
    kind: &str,
    records: Vec<(String, Map<String, Json>)>,
) -> Result<Response, ApiError> {
    let Some(bus) = &api.bus else {
        return Err(ApiError(StatusCode::CONFLICT, "this server has no message bus".into()));
    };
    let subject = subject(&model.name);
    let count = records.len() as u64;
    let messages = records
        .into_iter()
        .map(|(id, record)| crate::bus::Publish {
            subject: subject.clone(),
            headers: vec![("Nats-Msg-Id", message_id(kind, &model.name, &id))],
            body: Json::Object(record).to_string().into(),
        })
        .collect();
    let sequences = bus
        .publish(messages)
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("nothing stored: {e}")))?;
    api.metrics.captured(&model.name).inc_by(count);
    api.metrics.model_records(&model.name, kind).inc_by(count);
    Ok(json_body(
        StatusCode::ACCEPTED,
        json!({ "model": model.name, "kind": kind, "accepted": count, "last_seq": sequences.iter().max() }),
    ))
}

/// `POST /v1/models/{model}/predictions`: `{"request_id": "…", <prediction fields>}` (with
/// `"entity"` for one entity of a lookup of several) or an array of them; stored once per
/// request id and entity (a retry within the duplicate window is dropped).
pub(crate) async fn predictions(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    api.allow(&headers, Scope::Capture, None)?;
    let model = model(&api, &name)?;
    let expected =
        "{\"request_id\": \"<the lookup's>\", \"entity\"?: \"<one of its entities>\", <prediction fields>} or an array of them";
    let items = objects(&body, expected)?;
    let at = now_ms();
    let mut records = Vec::with_capacity(items.len());
    for (i, mut item) in items.into_iter().enumerate() {
        check_fields(&item, i, &model.predictions, &["request_id", "entity"])?;
        let id = text(&item, "request_id", i)?
            .ok_or_else(|| ApiError::bad_request(format!("item {i}: missing \"request_id\": expected {expected}")))?;
        // A lookup of several entities gets a prediction per entity.
        let id = match text(&item, "entity", i)? {
            Some(entity) => format!("{id}:{entity}"),
            None => id.to_string(),
        };
        item.insert("kind".into(), "prediction".into());
        item.insert("model".into(), model.name.clone().into());
        item.insert("at".into(), at.into());
        records.push((id, item));
    }
    store(&api, model, "prediction", records).await
}

/// `POST /v1/models/{model}/labels`: `{"request_id": "…", <label fields>}`, or `{"entity": "…",
/// "at": <time>, <label fields>}` for a label of whatever was served for that entity as of
/// that time; or an array of them.
pub(crate) async fn labels(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    api.allow(&headers, Scope::Capture, None)?;
    let model = model(&api, &name)?;
    let expected =
        "{\"request_id\": \"…\", <label fields>} or {\"entity\": \"…\", \"at\": <RFC 3339 or epoch ms>, <label fields>}, or an array of them";
    if model.labels.is_empty() {
        return Err(ApiError::bad_request(format!(
            "model \"{name}\" declares no labels: add labels = {{ <field> = \"bool\" }} to its [[model]]"
        )));
    }
    let items = objects(&body, expected)?;
    let now = now_ms();
    let mut records = Vec::with_capacity(items.len());
    for (i, mut item) in items.into_iter().enumerate() {
        check_fields(&item, i, &model.labels, &["request_id", "entity", "at"])?;
        let request_id = text(&item, "request_id", i)?.map(str::to_string);
        let entity = text(&item, "entity", i)?.map(str::to_string);
        let id = match (request_id, entity, item.get("at").cloned()) {
            (Some(id), None, None) => id,
            (Some(id), Some(entity), None) => format!("{id}:{entity}"),
            (None, Some(entity), Some(at)) => {
                let at = crate::sources::decode::parse_time(Some(&at), "at", crate::config::TimeFormat::EpochMs)
                    .map_err(|e| ApiError::bad_request(format!("item {i}: {e}")))?
                    .ok_or_else(|| ApiError::bad_request(format!("item {i}: \"at\" is null: expected a time")))?;
                item.insert("at".into(), (at / 1000).into());
                format!("{entity}@{}", at / 1000)
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "item {i}: expected {expected}; nothing was stored"
                )))
            }
        };
        item.insert("kind".into(), "label".into());
        item.insert("model".into(), model.name.clone().into());
        item.insert("labelled_at".into(), now.into());
        records.push((id, item));
    }
    store(&api, model, "label", records).await
}

/// The query of `GET /v1/models/{model}/captures`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CapturesQuery {
    /// Records after this sequence (default 0: from the first).
    after: Option<u64>,
    /// At most this many (default 100, at most 1000).
    limit: Option<usize>,
}

/// `GET /v1/models/{model}/captures[?after=N&limit=M]`: the model's records in the order they
/// were stored (lookups served, predictions, labels), each with the sequence of its message
/// (a message of captured lookups holds many); page with `after` = `next_after`, `limit`
/// counting messages.
pub(crate) async fn captures(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    Query(query): Query<CapturesQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    api.allow(&headers, Scope::Admin, None)?;
    let model = model(&api, &name)?;
    let Some(bus) = &api.bus else {
        return Err(ApiError(StatusCode::CONFLICT, "this server has no message bus".into()));
    };
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let messages = bus
        .read(CAPTURE_STREAM, &subject(&model.name), query.after.unwrap_or(0), limit)
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    // A message of captured lookups holds one record per line (Snappy-framed).
    let mut records: Vec<Json> = Vec::new();
    for m in &messages {
        for line in crate::capture::records_body(&m.body).split(|b| *b == b'\n') {
            let record: Json = serde_json::from_slice(line).unwrap_or_else(|_| String::from_utf8_lossy(line).into());
            records.push(json!({ "seq": m.seq, "record": record }));
        }
    }
    Ok(json_body(
        StatusCode::OK,
        json!({ "model": name, "records": records, "next_after": messages.last().map(|m| m.seq) }),
    ))
}

/// `GET /v1/models/{model}/online/{entity}`: the entity's last captured lookup (its features
/// as served, request id, capture time) and its last prediction posted with `"entity"`, from
/// the online store the production-set writer keeps (read scope on every set the model is
/// served from).
pub(crate) async fn online(
    State(api): State<Arc<Api>>,
    Path((name, entity)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = api.allow(&headers, Scope::Read, None)?;
    let model = model(&api, &name)?;
    let features: &[String] = match &model.vector {
        Some(vector) => api.vectors.get(vector).map(Vec::as_slice).unwrap_or_default(),
        None => &model.features,
    };
    for set in features.iter().filter_map(|f| f.split_once(':').map(|(set, _)| set)) {
        token
            .allows(Scope::Read, Some(set))
            .map_err(|denied| api.refuse(denied))?;
    }
    let hashes: Vec<String> = crate::capture::ONLINE_PARTS
        .iter()
        .map(|part| {
            let prefix = crate::keys::set_prefix(&api.base.host.redis_prefix, &format!("{name}.{part}"), 1);
            crate::keys::entity_hash(&prefix, &entity)
        })
        .collect();
    let read = api
        .store
        .read(&hashes)
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let mut answer = Map::new();
    answer.insert("model".into(), name.clone().into());
    answer.insert("entity".into(), entity.clone().into());
    for (part, fields) in crate::capture::ONLINE_PARTS.iter().zip(read) {
        if fields.is_empty() {
            answer.insert((*part).into(), Json::Null);
            continue;
        }
        let mut values = Map::new();
        let mut out = Map::new();
        for (field, bytes) in fields {
            let value: Json = serde_json::from_slice(&bytes).unwrap_or(Json::Null);
            match field.as_str() {
                "_ts" => {
                    let at = value.as_i64().unwrap_or(0);
                    out.insert("at".into(), crate::event_time::rfc3339(at).into());
                }
                "_seq" => {}
                "request_id" => {
                    out.insert("request_id".into(), value);
                }
                // The entity's part of the answer as served (JSON text), and its values.
                "answer" => {
                    let served = match value {
                        Json::String(text) => serde_json::from_str(&text).unwrap_or(Json::Null),
                        stored => stored,
                    };
                    if let Some(features) = served.get("features").and_then(Json::as_object) {
                        for (name, feature) in features {
                            values.insert(name.clone(), feature.get("value").cloned().unwrap_or(Json::Null));
                        }
                    }
                    out.insert("answer".into(), served);
                }
                _ => {
                    values.insert(field, value);
                }
            }
        }
        let key = if *part == "served" { "features" } else { "prediction" };
        out.insert(key.into(), values.into());
        answer.insert((*part).into(), out.into());
    }
    Ok(json_body(StatusCode::OK, Json::Object(answer)))
}
