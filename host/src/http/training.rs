//! Training sets over HTTP, as jobs: `POST /v1/training-sets` with the entity rows and the
//! features starts one (202 with its id); `GET /v1/training-sets/{id}` tells its status;
//! `GET /v1/training-sets/{id}/data` downloads the Parquet file once it is done. The same
//! code as `sluice training-set` builds it. The jobs' files are the catalog's
//! ([`crate::catalog::jobs`]), so their results outlive a restart.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value as Json};

use super::{Api, ApiError};
use crate::catalog::jobs::{TrainingJob, TrainingJobs};
use crate::config::Scope;
use crate::offline::training::{self, TrainingOptions};

/// The body of `POST /v1/training-sets`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobRequest {
    /// Entity rows: the sets' entity fields and the time field.
    #[serde(default)]
    entities: Vec<serde_json::Map<String, Json>>,
    /// `set:feature` entries (or `set:*`).
    #[serde(default)]
    features: Vec<String>,
    /// A feature vector of the config.
    #[serde(default)]
    vector: Option<String>,
    /// The entity rows' time field (default `t`).
    #[serde(default)]
    time_field: Option<String>,
    /// Instead of entity rows and features: a model's captured lookups, with their
    /// predictions and labels (`sluice training-set --model`).
    #[serde(default)]
    model: Option<String>,
    /// With `model`: lookups captured at or after this time (RFC 3339 or epoch ms).
    #[serde(default)]
    from: Option<Json>,
    /// With `model`: lookups captured before this time.
    #[serde(default)]
    to: Option<Json>,
    /// With `model`: only the lookups a label came for.
    #[serde(default)]
    labelled_only: bool,
}

fn jobs(api: &Api) -> TrainingJobs {
    TrainingJobs::new(&api.base.resolve(&api.base.host.data_dir))
}

fn json_body(status: StatusCode, body: Json) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// A job, for a token that may read every feature set the job reads (as starting it needed);
/// a job recorded without its sets, for an admin token only.
fn find_job(api: &Api, headers: &HeaderMap, id: &str) -> Result<TrainingJob, ApiError> {
    let token = api.allow(headers, Scope::Read, None)?;
    let job = jobs(api)
        .find(id)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no training-set job \"{id}\"")))?;
    match job.sets().map_err(internal)? {
        Some(sets) => {
            for set in &sets {
                token
                    .allows(Scope::Read, Some(set))
                    .map_err(|denied| api.refuse(denied))?;
            }
        }
        None => token.allows(Scope::Admin, None).map_err(|denied| api.refuse(denied))?,
    }
    Ok(job)
}

/// The features a request names (a list or a vector, not both).
fn requested_features(request: &JobRequest) -> Result<Vec<String>, ApiError> {
    if request.entities.is_empty() {
        return Err(ApiError::bad_request("entities: expected at least one entity row"));
    }
    match (&request.vector, request.features.is_empty()) {
        (Some(vector), true) => Ok(vec![vector.clone()]),
        (None, false) => Ok(request.features.clone()),
        _ => Err(ApiError::bad_request("expected either \"features\" or \"vector\"")),
    }
}

/// `POST /v1/training-sets`: validates the request and starts the job.
pub(crate) async fn start(State(api): State<Arc<Api>>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let token = api.allow(&headers, Scope::Read, None)?;
    let request: JobRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "expected {{\"entities\": [{{...entity fields, \"t\": time}}], \"features\": [\"set:feature\"] or \
             \"vector\": \"name\", \"time_field\": optional}}, or {{\"model\": \"name\", \"from\"/\"to\": optional times, \
             \"labelled_only\": optional}}: {e}"
        ))
    })?;
    if let Some(model) = request.model.clone() {
        return start_for_model(&api, token, request, &model);
    }
    let features = requested_features(&request)?;
    let config = api.base.clone();
    let (sets, _) = training::resolve(&config, &features, None).map_err(|e| ApiError::bad_request(e.to_string()))?;
    for set in &sets {
        token
            .allows(Scope::Read, Some(&set.name))
            .map_err(|denied| api.refuse(denied))?;
    }
    let names: Vec<&str> = sets.iter().map(|s| s.name.as_str()).collect();
    let job = jobs(&api)
        .create(&request.entities, &token.name, &names)
        .map_err(internal)?;
    let id = job.id.clone();
    tracing::info!(job = %id, token = %token.name, rows = request.entities.len(), "training-set job started");
    let options = TrainingOptions {
        config: config.file.clone(),
        entities: Some(job.entities()),
        features,
        out: job.output(),
        time_field: request.time_field.unwrap_or_else(|| "t".into()),
        version: None,
        partitions: None,
        quiet: true,
        ..Default::default()
    };
    let by = token.name.clone();
    let names: Vec<String> = names.into_iter().map(str::to_string).collect();
    tokio::task::spawn_blocking(move || run_job(&config, &options, &job, &by, &names));
    Ok(json_body(
        StatusCode::ACCEPTED,
        json!({ "id": id, "status": "running", "poll": format!("/v1/training-sets/{id}") }),
    ))
}

/// `POST /v1/training-sets` with `"model"`: a job building the model's retraining data from
/// its production set. The token must read every feature set the model is served from.
fn start_for_model(
    api: &Arc<Api>,
    token: &crate::http::auth::Token,
    request: JobRequest,
    name: &str,
) -> Result<Response, ApiError> {
    if !request.entities.is_empty() || !request.features.is_empty() || request.vector.is_some() {
        return Err(ApiError::bad_request(
            "\"model\" takes the place of \"entities\" and \"features\"/\"vector\": send one or the other",
        ));
    }
    let config = api.base.clone();
    let model = config.models.iter().find(|m| m.name == name).cloned().ok_or_else(|| {
        let known: Vec<&str> = config.models.iter().map(|m| m.name.as_str()).collect();
        ApiError(
            StatusCode::NOT_FOUND,
            format!("model: no model \"{name}\" (declared: {})", known.join(", ")),
        )
    })?;
    let served = match &model.vector {
        Some(vector) => vec![vector.clone()],
        None => model.features.clone(),
    };
    let (sets, _) = training::resolve(&config, &served, None).map_err(|e| ApiError::bad_request(e.to_string()))?;
    for set in &sets {
        token
            .allows(Scope::Read, Some(&set.name))
            .map_err(|denied| api.refuse(denied))?;
    }
    let time = |key: &str, value: &Option<Json>| {
        crate::sources::decode::parse_time(value.as_ref(), key, crate::config::TimeFormat::EpochMs)
            .map_err(|e| ApiError::bad_request(format!("{e} (expected RFC 3339 or epoch milliseconds)")))
    };
    let (from, to) = (time("from", &request.from)?, time("to", &request.to)?);
    let names: Vec<String> = sets.iter().map(|s| s.name.clone()).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let job = jobs(api).create(&[], &token.name, &name_refs).map_err(internal)?;
    let id = job.id.clone();
    tracing::info!(job = %id, token = %token.name, model = %name, "training-set job started");
    let by = token.name.clone();
    let labelled_only = request.labelled_only;
    tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let options = crate::offline::production::ModelTraining {
            model: &model,
            from,
            to,
            labelled_only,
        };
        let status = match crate::offline::production::build(&config, &options, &job.output()) {
            Ok(report) => json!({
                "id": job.id, "status": "done", "by": by, "sets": names, "model": model.name, "rows": report.rows,
                "predicted": report.predicted, "labelled": report.labelled, "features": report.features,
                "records": report.records, "repeats": report.repeats, "seconds": started.elapsed().as_secs_f64(),
                "download": format!("/v1/training-sets/{}/data", job.id),
            }),
            Err(e) => {
                json!({ "id": job.id, "status": "failed", "by": by, "sets": names, "model": model.name, "error": e.to_string() })
            }
        };
        if let Err(e) = job.record(&status) {
            tracing::error!(job = %job.id, "writing the job's status failed: {e}");
        }
    });
    Ok(json_body(
        StatusCode::ACCEPTED,
        json!({ "id": id, "status": "running", "poll": format!("/v1/training-sets/{id}") }),
    ))
}

/// Builds a job's training set (on a blocking thread) and records how it ended.
fn run_job(config: &crate::config::Config, options: &TrainingOptions, job: &TrainingJob, by: &str, sets: &[String]) {
    let id = &job.id;
    let status = match training::build(config, options) {
        Ok(report) => json!({
            "id": id, "status": "done", "by": by, "sets": sets, "rows": report.rows, "features": report.features,
            "missing": report.missing, "seconds": report.seconds,
            "download": format!("/v1/training-sets/{id}/data"),
        }),
        Err(e) => json!({ "id": id, "status": "failed", "by": by, "sets": sets, "error": e.to_string() }),
    };
    if let Err(e) = job.record(&status) {
        tracing::error!(job = %id, "writing the job's status failed: {e}");
    }
}

/// `GET /v1/training-sets/{id}`: the job's status (running, done with the download path and
/// counts, or failed with the reason).
pub(crate) async fn status(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // The status file is JSON the job wrote (atomically): served as it is.
    let status = find_job(&api, &headers, &id)?.status().map_err(internal)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], status).into_response())
}

/// `GET /v1/training-sets/{id}/data`: the Parquet file of a finished job.
pub(crate) async fn data(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let bytes = find_job(&api, &headers, &id)?.data().map_err(|_| {
        ApiError(
            StatusCode::CONFLICT,
            format!("training-set job \"{id}\" has no file (yet): see GET /v1/training-sets/{id}"),
        )
    })?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/vnd.apache.parquet".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"training-{id}.parquet\""),
            ),
        ],
        bytes,
    )
        .into_response())
}
