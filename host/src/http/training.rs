//! Training sets over HTTP, as jobs: `POST /v1/training-sets` with the entity rows and the
//! features starts one (202 with its id); `GET /v1/training-sets/{id}` tells its status;
//! `GET /v1/training-sets/{id}/data` downloads the Parquet file once it is done. The same
//! code as `sluice training-set` builds it. Jobs live under `<data_dir>/training-sets/<id>/`
//! (the entity rows, the status, the file), so their results outlive a restart.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value as Json};

use super::{Api, ApiError};
use crate::catalog::write_atomically;
use crate::config::Scope;
use crate::offline::training::{self, TrainingOptions};

/// The body of `POST /v1/training-sets`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobRequest {
    /// Entity rows: the sets' entity fields and the time field.
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
}

fn jobs_dir(api: &Api) -> PathBuf {
    crate::catalog::training_jobs_dir(&api.base.resolve(&api.base.host.data_dir))
}

fn json_body(status: StatusCode, body: Json) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// The folder of a job, for a token with the read scope. A job id is 16 hex digits
/// (checked before it names a folder).
fn job_dir(api: &Api, headers: &HeaderMap, id: &str) -> Result<PathBuf, ApiError> {
    api.allow(headers, Scope::Read, None)?;
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no training-set job \"{id}\"")));
    }
    let dir = jobs_dir(api).join(id);
    if !dir.join("status.json").exists() {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no training-set job \"{id}\"")));
    }
    Ok(dir)
}

/// `POST /v1/training-sets`: validates the request and starts the job.
pub(crate) async fn start(State(api): State<Arc<Api>>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let token = api.allow(&headers, Scope::Read, None)?;
    let request: JobRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "expected {{\"entities\": [{{...entity fields, \"t\": time}}], \"features\": [\"set:feature\"] or \
             \"vector\": \"name\", \"time_field\": optional}}: {e}"
        ))
    })?;
    if request.entities.is_empty() {
        return Err(ApiError::bad_request("entities: expected at least one entity row"));
    }
    let features = match (&request.vector, request.features.is_empty()) {
        (Some(vector), true) => vec![vector.clone()],
        (None, false) => request.features.clone(),
        _ => return Err(ApiError::bad_request("expected either \"features\" or \"vector\"")),
    };
    let config = api.base.clone();
    let (sets, _) = training::resolve(&config, &features, None).map_err(|e| ApiError::bad_request(e.to_string()))?;
    for set in &sets {
        token
            .allows(Scope::Read, Some(&set.name))
            .map_err(|denied| api.refuse(denied))?;
    }
    let id = crate::http::auth::new_token("job")
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .trim_start_matches("job_")
        .chars()
        .take(16)
        .collect::<String>();
    let dir = jobs_dir(&api).join(&id);
    let mut lines = Vec::new();
    for row in &request.entities {
        serde_json::to_writer(&mut lines, row)
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        lines.push(b'\n');
    }
    let write = |name: &str, bytes: &[u8]| {
        write_atomically(&dir.join(name), bytes).map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    };
    write("entities.jsonl", &lines)?;
    let status = json!({ "id": id, "status": "running", "by": token.name, "rows": request.entities.len() });
    write("status.json", status.to_string().as_bytes())?;
    tracing::info!(job = %id, token = %token.name, rows = request.entities.len(), "training-set job started");
    let options = TrainingOptions {
        config: config.file.clone(),
        entities: dir.join("entities.jsonl"),
        features,
        out: dir.join("training.parquet"),
        time_field: request.time_field.unwrap_or_else(|| "t".into()),
        version: None,
        partitions: None,
        quiet: true,
    };
    let (job, by) = (id.clone(), token.name.clone());
    tokio::task::spawn_blocking(move || {
        let status = match training::build(&config, &options) {
            Ok(report) => json!({
                "id": job, "status": "done", "by": by, "rows": report.rows, "features": report.features,
                "missing": report.missing, "seconds": report.seconds,
                "download": format!("/v1/training-sets/{job}/data"),
            }),
            Err(e) => json!({ "id": job, "status": "failed", "by": by, "error": e.to_string() }),
        };
        if let Err(e) = write_atomically(
            &options.out.with_file_name("status.json"),
            status.to_string().as_bytes(),
        ) {
            tracing::error!(job = %job, "writing the job's status failed: {e}");
        }
    });
    Ok(json_body(
        StatusCode::ACCEPTED,
        json!({ "id": id, "status": "running", "poll": format!("/v1/training-sets/{id}") }),
    ))
}

/// `GET /v1/training-sets/{id}`: the job's status (running, done with the download path and
/// counts, or failed with the reason).
pub(crate) async fn status(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let dir = job_dir(&api, &headers, &id)?;
    // The status file is JSON the job wrote (atomically): served as it is.
    let status = std::fs::read_to_string(dir.join("status.json"))
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], status).into_response())
}

/// `GET /v1/training-sets/{id}/data`: the Parquet file of a finished job.
pub(crate) async fn data(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let file = job_dir(&api, &headers, &id)?.join("training.parquet");
    let bytes = std::fs::read(&file).map_err(|_| {
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
