//! Monitoring over HTTP: `GET /v1/feature-sets/{name}/drift` (per feature of each monitored
//! version: its status, since which window, the last verdict's scores; the drifting features
//! listed) and `GET /v1/feature-sets/{name}/statistics[?window=&from=&to=]` (the closed windows
//! of the base width or of the hourly or daily roll-ups, as the store keeps them: per feature
//! count, nulls, moments, quantiles or top values, scores, status); and the references:
//! `PUT /v1/feature-sets/{name}/references/{reference}` builds one as `sluice profile` does,
//! `GET` reads it, and `POST …/references/{reference}/activate` makes the running monitors
//! judge the windows they open from then on against it (remembered across restarts).

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
use crate::monitor::reference::ReferenceFeature;

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
    let mut no_reference = Vec::new();
    let closed = monitor.closed(monitor.window()).expect("the base width is kept");
    for (feature, judge) in monitor.statuses() {
        if monitor.reference().is_none_or(|r| !r.features.contains_key(feature)) {
            // Profiled (see the statistics route) but never judged: not `ok`.
            no_reference.push(feature.clone());
            features.insert(
                feature.clone(),
                json!({ "status": "no_reference", "since": null, "last": null }),
            );
            continue;
        }
        let last = closed
            .iter()
            .rev()
            .find_map(|w| w.features.get(feature).filter(|f| f.verdict.is_some()).map(|f| (w, f)));
        let since = closed
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
    let mut out = json!({
        "version": version,
        "reference": monitor.reference().map(|r| json!({ "name": r.name, "source": r.source, "rows": r.rows, "created": r.created })),
        "drifting": drifting,
        "possible": possible,
        "no_reference": no_reference,
        "features": features,
        "windows_closed": closed.len(),
        "late_rows": monitor.late,
    });
    let held: Vec<&str> = monitor.held_references().collect();
    if !held.is_empty() {
        // Windows open at a switch finish against the reference they opened with.
        out["held_references"] = json!(held);
    }
    let segments: serde_json::Map<String, Json> = monitor
        .segments()
        .map(|(segment, child)| {
            let mut of = drift_of(version, child);
            if let Some(fields) = of.as_object_mut() {
                fields.remove("version");
                fields.remove("reference");
            }
            (segment.clone(), of)
        })
        .collect();
    if !segments.is_empty() {
        out["segments"] = Json::Object(segments);
    }
    out
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
    /// The width: the set's window (default), `1h` or `1d`.
    window: Option<String>,
    /// Windows starting at or after (RFC 3339 or epoch ms).
    from: Option<String>,
    /// Windows ending at or before.
    to: Option<String>,
    /// A segment's windows (`[feature_set.monitor] segments`) instead of the whole set's.
    segment: Option<String>,
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
    let width = match &query.window {
        None => None,
        Some(text) => Some(
            crate::duration::parse_duration(text)
                .map_err(|e| ApiError::bad_request(format!("window: {e}")))?
                .as_micros() as i64,
        ),
    };
    let mut versions = Vec::new();
    for (version, monitor) in monitored(&api, &headers, &name)? {
        let whole = monitor.lock().unwrap_or_else(|e| e.into_inner());
        let monitor = match &query.segment {
            None => &*whole,
            Some(segment) => match whole.segments().find(|(s, _)| *s == segment) {
                Some((_, child)) => child,
                None => {
                    let known: Vec<&str> = whole.segments().map(|(s, _)| s.as_str()).collect();
                    return Err(ApiError::bad_request(if known.is_empty() {
                        format!("segment: version {version} is not segmented ([feature_set.monitor] segments)")
                    } else {
                        format!("segment: expected one of {}, found \"{segment}\"", known.join(", "))
                    }));
                }
            },
        };
        let width = width.unwrap_or(monitor.window());
        let Some(closed) = monitor.closed(width) else {
            let kept: Vec<String> = monitor.widths().iter().map(|w| format!("{}s", w / 1_000_000)).collect();
            return Err(ApiError::bad_request(format!(
                "window: version {version} keeps windows of {} (the set's window, then 1h and 1d roll-ups)",
                kept.join(", ")
            )));
        };
        let windows: Vec<Json> = closed
            .iter()
            .filter(|w| w.start >= from && w.end <= to)
            .map(|w| {
                json!({ "start": time(w.start), "end": time(w.end), "rows": w.rows, "partial": w.partial,
                        "reference": w.reference, "features": w.features })
            })
            .collect();
        let mut entry = json!({ "version": version, "window_seconds": width / 1_000_000, "windows": windows });
        if let Some(segment) = monitor.segment() {
            entry["segment"] = segment.into();
        }
        versions.push(entry);
    }
    let body = json!({ "name": name, "versions": versions }).to_string();
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The body of `PUT /v1/feature-sets/{name}/references/{reference}`: the rows to profile.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReferenceRequest {
    /// A finished training-set job's id: its Parquet's columns marked as this set's features.
    training_set: Option<String>,
    /// Its time column (default `t`).
    time_field: Option<String>,
    /// Or an offline version of the set: its Parquet rows.
    version: Option<u32>,
    /// With `version`: rows from this event time on (RFC 3339 or epoch ms).
    from: Option<String>,
    /// With `version`: rows before this event time.
    to: Option<String>,
    /// Only these features (default: all).
    #[serde(default)]
    features: Vec<String>,
}

/// `PUT /v1/feature-sets/{name}/references/{reference}`: builds and stores a reference, as
/// `sluice profile` does; 201 with its summary.
pub(crate) async fn put_reference(
    State(api): State<Arc<Api>>,
    Path((name, reference)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    api.allow(&headers, Scope::Admin, Some(&name))?;
    let request: ReferenceRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "expected {{\"training_set\": \"<job id>\"}} or {{\"version\": N, \"from\"?: time, \"to\"?: time}}: {e}"
        ))
    })?;
    crate::catalog::references::check_name(&reference).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if !api.base.feature_sets.iter().any(|s| s.name == name) {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no feature set \"{name}\"")));
    }
    let data_dir = api.base.resolve(&api.base.host.data_dir);
    let training_set = match (&request.training_set, request.version) {
        (Some(id), None) => {
            let job = crate::catalog::jobs::TrainingJobs::new(&data_dir)
                .find(id)
                .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no training-set job \"{id}\"")))?;
            if !job.output().exists() {
                return Err(ApiError(
                    StatusCode::CONFLICT,
                    format!("training-set job {id} has not finished: see GET /v1/training-sets/{id}"),
                ));
            }
            Some(job.output())
        }
        (None, Some(_)) => None,
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of \"training_set\" (a training-set job's id) and \"version\"",
            ))
        }
    };
    let options = crate::offline::reference::ProfileOptions {
        config: std::path::PathBuf::new(),
        set: name.clone(),
        training_set,
        time_field: request.time_field.unwrap_or_else(|| "t".into()),
        version: request.version,
        from: request.from,
        to: request.to,
        name: reference,
        features: request.features,
    };
    let base = api.base.clone();
    let built = tokio::task::spawn_blocking(move || crate::offline::reference::build_in(&base, &options))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("profiling stopped: {e}")))?;
    let (reference, _) = built.map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
    let features: serde_json::Map<String, Json> = reference
        .features
        .iter()
        .map(|(name, f)| {
            let summary = match f {
                ReferenceFeature::Numeric { count, mean, std, .. } => {
                    json!({ "kind": "numeric", "count": count, "mean": mean, "std": std })
                }
                ReferenceFeature::Categorical { count, values, .. } => {
                    json!({ "kind": "categorical", "count": count, "values": values })
                }
            };
            (name.clone(), summary)
        })
        .collect();
    let body = json!({
        "name": reference.name, "set": reference.set, "version": reference.version,
        "rows": reference.rows, "source": reference.source, "created": reference.created,
        "features": features,
    });
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response())
}

/// `GET /v1/feature-sets/{name}/references/{reference}`: the stored reference.
pub(crate) async fn get_reference(
    State(api): State<Arc<Api>>,
    Path((name, reference)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    api.allow(&headers, Scope::Read, Some(&name))?;
    let data_dir = api.base.resolve(&api.base.host.data_dir);
    let found = crate::catalog::references::References::new(&data_dir).load(&name, &reference);
    match found {
        Ok(reference) => Ok((
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            reference.to_json(),
        )
            .into_response()),
        Err(e @ crate::catalog::references::ReferenceError::Missing { .. }) => {
            Err(ApiError(StatusCode::NOT_FOUND, e.to_string()))
        }
        Err(e @ crate::catalog::references::ReferenceError::Invalid(_)) => Err(ApiError::bad_request(e.to_string())),
        Err(e) => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// The query of `POST /v1/feature-sets/{name}/references/{reference}/activate`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActivateQuery {
    /// Only this version (default: every monitored version of the set).
    version: Option<u32>,
}

/// `POST /v1/feature-sets/{name}/references/{reference}/activate[?version=N]`: the monitors of
/// the set's versions count and judge the windows they open from now on against the stored
/// reference; windows open now finish against theirs. Every version is checked before any is
/// switched; the choice is stored, so a restart keeps it (until the definition names another
/// reference).
pub(crate) async fn activate_reference(
    State(api): State<Arc<Api>>,
    Path((name, reference)): Path<(String, String)>,
    Query(query): Query<ActivateQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    use crate::catalog::references::{ActiveChoice, ReferenceError, References};
    let token = api.allow(&headers, Scope::Admin, Some(&name))?.name.clone();
    crate::catalog::references::check_name(&reference).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut versions = monitored(&api, &headers, &name)?;
    if let Some(wanted) = query.version {
        let monitoring: Vec<String> = versions.iter().map(|(v, _)| v.to_string()).collect();
        versions.retain(|(v, _)| *v == wanted);
        if versions.is_empty() {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!(
                    "feature set \"{name}\" has no monitored version {wanted} (monitored: {})",
                    monitoring.join(", ")
                ),
            ));
        }
    }
    let references = References::new(&api.base.resolve(&api.base.host.data_dir));
    let loaded = match references.load(&name, &reference) {
        Ok(loaded) => loaded,
        Err(e @ ReferenceError::Missing { .. }) => {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("{e}: build it with PUT /v1/feature-sets/{name}/references/{reference} or `sluice profile`"),
            ))
        }
        Err(e @ ReferenceError::Invalid(_)) => return Err(ApiError::bad_request(e.to_string())),
        Err(e) => return Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    };
    let definitions = api.definitions.load();
    let config_of = |version: u32| {
        definitions
            .iter()
            .find(|s| s.name == name && s.version == version)
            .and_then(|s| s.monitor.clone())
            .expect("a monitored version has a definition with [feature_set.monitor]")
    };
    // Every version checked first: all are switched or none.
    for (version, monitor) in &versions {
        let config = config_of(*version);
        if !config.segments.is_empty() {
            crate::monitor::reference::check_segments(Some(&loaded), Some(&reference), &config.segments)
                .map_err(|e| ApiError::bad_request(format!("version {version}: {e}")))?;
        }
        let monitor = monitor.lock().unwrap_or_else(|e| e.into_inner());
        let mut known: Vec<&String> = monitor.statuses().keys().collect();
        if let Some(window) = monitor.closed(monitor.window()).and_then(|c| c.back()) {
            known.extend(window.features.keys());
        }
        if !known.is_empty() && !known.iter().any(|f| loaded.features.contains_key(*f)) {
            known.sort();
            known.dedup();
            let names: Vec<&str> = known.iter().map(|f| f.as_str()).collect();
            return Err(ApiError::bad_request(format!(
                "reference \"{reference}\" has none of version {version}'s features ({}): it has {}",
                names.join(", "),
                loaded.features.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
    }
    let mut switched = Vec::new();
    for (version, monitor) in versions {
        let config = config_of(version);
        let instead_of = match references.chosen(&name, version) {
            Ok(Some(choice)) if choice.instead_of == config.reference => choice.instead_of,
            _ => config.reference.clone(),
        };
        let choice = ActiveChoice {
            reference: reference.clone(),
            instead_of,
        };
        references
            .choose(&name, version, &choice)
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("storing the choice: {e}")))?;
        let mut monitor = monitor.lock().unwrap_or_else(|e| e.into_inner());
        let previous = monitor.reference().map(|r| r.name.clone());
        monitor.switch(loaded.clone(), &config.segments);
        let held: Vec<&str> = monitor.held_references().collect();
        switched.push(json!({
            "version": version, "reference": reference, "previous": previous,
            "held_references": held, "segments": monitor.segments().map(|(s, _)| s.clone()).collect::<Vec<_>>(),
        }));
    }
    tracing::info!(set = %name, reference = %reference, token = %token, "monitoring reference switched");
    let body = json!({
        "name": name, "reference": reference, "created": loaded.created,
        "applies_to": "windows opened from now on; windows open now finish against the reference they opened with",
        "versions": switched,
    });
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response())
}
