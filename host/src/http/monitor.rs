//! Monitoring over HTTP: `GET /v1/feature-sets/{name}/drift` (per feature of each monitored
//! version: its status, since which window, the last verdict's scores; the drifting features
//! listed) and `GET /v1/feature-sets/{name}/statistics[?from=&to=]` (the closed windows kept in
//! memory: per feature count, nulls, moments, quantiles or top values, scores, status).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value as Json};

use super::{Api, ApiError};
use crate::config::Scope;
use crate::event_time::rfc3339 as time;
use crate::monitor::drift::Status;
use crate::monitor::live::SetMonitor;

/// The monitored versions of a set (token checked), each with its monitor.
fn monitored(
    api: &Api,
    headers: &HeaderMap,
    name: &str,
) -> Result<Vec<(u32, crate::runtime::SharedMonitor)>, ApiError> {
    api.allow(headers, Scope::Read, Some(name))?;
    let definitions = api.definitions.load();
    let versions: Vec<u32> = definitions
        .iter()
        .filter(|s| s.name == name)
        .map(|s| s.version)
        .collect();
    if versions.is_empty() {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no feature set \"{name}\"")));
    }
    let found: Vec<_> = versions
        .iter()
        .filter_map(|v| Some((*v, api.monitors.as_ref()?.get(&format!("{name}@v{v}"))?)))
        .collect();
    if found.is_empty() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("feature set \"{name}\" is not monitored: add [feature_set.monitor] to its definition"),
        ));
    }
    Ok(found)
}

/// One version's drift: per feature, its status, since when, and its last verdict's scores.
fn drift_of(version: u32, monitor: &SetMonitor) -> Json {
    let mut features = serde_json::Map::new();
    let mut drifting = Vec::new();
    let mut possible = Vec::new();
    for (feature, judge) in monitor.statuses() {
        let last = monitor
            .closed
            .iter()
            .rev()
            .find_map(|w| w.features.get(feature).filter(|f| f.verdict.is_some()).map(|f| (w, f)));
        let since = monitor
            .closed
            .iter()
            .rev()
            .find(|w| w.features.get(feature).is_some_and(|f| f.changed))
            .map(|w| time(w.end));
        match judge.status {
            Status::Drift => drifting.push(feature.clone()),
            Status::Possible => possible.push(feature.clone()),
            Status::Ok => {}
        }
        features.insert(
            feature.clone(),
            json!({
                "status": judge.status,
                "since": since,
                "last": last.map(|(w, f)| json!({
                    "window_start": time(w.start), "window_end": time(w.end), "count": f.count,
                    "verdict": f.verdict, "scores": f.scores, "sudden": f.sudden,
                })),
            }),
        );
    }
    json!({
        "version": version,
        "reference": monitor.reference().map(|r| json!({ "name": r.name, "source": r.source, "rows": r.rows, "created": r.created })),
        "drifting": drifting,
        "possible": possible,
        "features": features,
        "windows_closed": monitor.closed.len(),
        "late_rows": monitor.late,
    })
}

/// `GET /v1/feature-sets/{name}/drift`.
pub(crate) async fn drift(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let versions: Vec<Json> = monitored(&api, &headers, &name)?
        .into_iter()
        .map(|(version, monitor)| drift_of(version, &monitor.lock().unwrap_or_else(|e| e.into_inner())))
        .collect();
    let body = json!({ "name": name, "versions": versions }).to_string();
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The query of `statistics`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatisticsQuery {
    /// Windows starting at or after (RFC 3339 or epoch ms).
    from: Option<String>,
    /// Windows ending at or before.
    to: Option<String>,
}

/// `GET /v1/feature-sets/{name}/statistics`.
pub(crate) async fn statistics(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    Query(query): Query<StatisticsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let bound = |text: &Option<String>, default: i64, what: &str| -> Result<i64, ApiError> {
        let Some(text) = text else { return Ok(default) };
        crate::sources::decode::parse_time_text(text, what).map_err(|e| ApiError::bad_request(e.to_string()))
    };
    let (from, to) = (bound(&query.from, i64::MIN, "from")?, bound(&query.to, i64::MAX, "to")?);
    let versions: Vec<Json> = monitored(&api, &headers, &name)?
        .into_iter()
        .map(|(version, monitor)| {
            let monitor = monitor.lock().unwrap_or_else(|e| e.into_inner());
            let windows: Vec<Json> = monitor
                .closed
                .iter()
                .filter(|w| w.start >= from && w.end <= to)
                .map(|w| json!({ "start": time(w.start), "end": time(w.end), "rows": w.rows, "features": w.features }))
                .collect();
            json!({ "version": version, "windows": windows })
        })
        .collect();
    let body = json!({ "name": name, "versions": versions }).to_string();
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response())
}
