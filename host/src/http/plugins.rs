//! Plugins over HTTP: `PUT /v1/plugins/{name}` (a component as the body: validated, compiled,
//! smoke-tested with the configuration of every step that uses it, stored, then swapped in
//! atomically: batches in flight finish on the old version, the next ones run the new one),
//! `GET /v1/plugins`, `GET /v1/plugins/{name}`, `POST /v1/plugins/{name}/rollback`,
//! `DELETE /v1/plugins/{name}` (refused while a step uses it).
//!
//! A deployed component is kept under `<data_dir>/plugins/<name>/<hash>.wasm` with the active
//! hash in `ACTIVE`, so a restart runs what was deployed last, not only what the config names.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value as Json};

use super::{Api, ApiError};
use crate::catalog::store_active;
use crate::config::Scope;
use crate::plugin::{PluginError, PluginVersion, Registry};

fn plugin_error(e: PluginError) -> ApiError {
    let status = match &e {
        PluginError::NotFound(_) => StatusCode::NOT_FOUND,
        PluginError::Conflict(_) => StatusCode::CONFLICT,
        PluginError::Init { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        PluginError::Cache { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError(status, e.to_string())
}

fn describe(version: &PluginVersion, active: bool) -> Json {
    let at = version
        .deployed_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    json!({
        "name": version.name.as_str(),
        "version": version.version(),
        "hash": version.hash,
        "size": version.size,
        "active": active,
        "deployed_at": super::features::rfc3339(at),
        "deployed_by": version.deployed_by,
    })
}

fn registry(api: &Api) -> Result<&Arc<Registry>, ApiError> {
    api.registry
        .as_ref()
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "this server runs no plugins".into()))
}

fn json_body(status: StatusCode, body: Json) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// `PUT /v1/plugins/{name}`.
pub(crate) async fn deploy(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let token = api.allow(&headers, Scope::Deploy, None)?.name.clone();
    let registry = registry(&api)?.clone();
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "empty body: expected a WebAssembly component (the .wasm file)",
        ));
    }
    let (who, plugin, bytes) = (token.clone(), name.clone(), body.clone());
    let deployment = tokio::task::spawn_blocking(move || registry.deploy(&plugin, &bytes, Some(&who)))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(plugin_error)?;
    let version = &deployment.version;
    if let Some(dir) = &api.plugin_dir {
        store_active(dir, &name, &version.hash, Some(&body))
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("storing the plugin: {e}")))?;
    }
    tracing::info!(
        plugin = %version.label(),
        token = %token,
        previous = deployment.previous.as_ref().map(|p| p.label()).unwrap_or_default(),
        "plugin deployed over HTTP"
    );
    let mut body = describe(version, true);
    body["previous"] = deployment.previous.as_ref().map_or(Json::Null, |p| p.version().into());
    body["unchanged"] = deployment.unchanged.into();
    body["cached"] = deployment.cached.into();
    let status = if deployment.previous.is_none() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_body(status, body))
}

/// `GET /v1/plugins`: the active version of each.
pub(crate) async fn list(State(api): State<Arc<Api>>, headers: HeaderMap) -> Result<Response, ApiError> {
    api.allow(&headers, Scope::Read, None)?;
    let plugins: Vec<Json> = registry(&api)?.list().iter().map(|v| describe(v, true)).collect();
    Ok(json_body(StatusCode::OK, json!({ "plugins": plugins })))
}

/// `GET /v1/plugins/{name}`: every kept version, oldest first.
pub(crate) async fn versions(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    api.allow(&headers, Scope::Read, None)?;
    let versions = registry(&api)?.versions(&name).map_err(plugin_error)?;
    let versions: Vec<Json> = versions.iter().map(|(v, active)| describe(v, *active)).collect();
    Ok(json_body(StatusCode::OK, json!({ "name": name, "versions": versions })))
}

/// `POST /v1/plugins/{name}/rollback`: the version before the active one becomes active.
pub(crate) async fn rollback(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = api.allow(&headers, Scope::Deploy, None)?.name.clone();
    let version = registry(&api)?.rollback(&name).map_err(plugin_error)?;
    if let Some(dir) = &api.plugin_dir {
        store_active(dir, &name, &version.hash, None)
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("storing the plugin: {e}")))?;
    }
    tracing::info!(plugin = %version.label(), token = %token, "plugin rolled back over HTTP");
    Ok(json_body(StatusCode::OK, describe(&version, true)))
}

/// `DELETE /v1/plugins/{name}`: refused (409) while a running step uses it.
pub(crate) async fn remove(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = api.allow(&headers, Scope::Deploy, None)?.name.clone();
    registry(&api)?.remove(&name).map_err(plugin_error)?;
    if let Some(dir) = &api.plugin_dir {
        let _ = std::fs::remove_dir_all(dir.join(&name));
    }
    tracing::info!(plugin = %name, token = %token, "plugin removed over HTTP");
    Ok(StatusCode::NO_CONTENT.into_response())
}
