//! The HTTP API (axum): online lookups, ingest, health, readiness and metrics. Every route
//! except `/healthz` needs a bearer token with the right scope (see [`auth`]).
//!
//! Everything a request needs is built once at start ([`Api::new`]): the request path does
//! no config or registry work, and a lookup is one round trip to the online store.

pub mod auth;
mod features;
mod models;
mod monitor;
pub mod plugins;
mod serve;
mod sets;
mod training;

pub use serve::{serve, tls_acceptor};

pub use sets::Apply;

use crate::fault::Invalid;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;

use crate::config::{Config, Scope, SourceConfig};
use crate::metrics::Metrics;
use crate::online::OnlineView;
use auth::{authenticate, Denied, Token};

/// How one feature set version is served.
pub(crate) struct ServedSet {
    version: u32,
    view: OnlineView,
    /// Online values older than this (by event time) are `outside_max_age`, µs.
    max_age: Option<i64>,
    /// The subject ingest publishes to (a set reading a stream subject).
    subject: Option<String>,
    /// The features its online rows have, when known: a lookup of another name is refused.
    features: Option<std::collections::BTreeSet<String>>,
}

/// A model as lookups capture for it: the name its records carry, its capture rate (one
/// lookup in this many), the latency histogram of its captured lookups.
type ServedModel = (Arc<str>, u64, prometheus_client::metrics::histogram::Histogram);

/// The API's state, shared by every request.
pub struct Api {
    /// The version of each feature set that lookups read.
    served: arc_swap::ArcSwap<HashMap<String, Arc<ServedSet>>>,
    /// Every running feature set version, for `/v1/feature-sets`.
    definitions: arc_swap::ArcSwap<Vec<crate::config::FeatureSetConfig>>,
    /// The config the server started with (new definitions are validated against it).
    base: Config,
    /// Starts a feature set version applied over HTTP.
    control: Option<tokio::sync::mpsc::Sender<sets::Apply>>,
    /// Feature vectors by name.
    vectors: HashMap<String, Vec<String>>,
    tokens: Vec<Token>,
    store: Arc<dyn crate::store::OnlineStore>,
    bus: Option<crate::bus::Bus>,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    registry: Option<Arc<crate::plugin::Registry>>,
    /// Where deployed plugins are stored (`None`: not stored).
    plugin_dir: Option<std::path::PathBuf>,
    /// The live statistics of the monitored sets (`None`: a server without pipelines).
    monitors: Option<Arc<crate::runtime::Monitors>>,
    /// The models (`[[model]]`) by name: the name their capture records carry, their
    /// capture rate (one lookup in this many), and the latency of their captured lookups.
    models: HashMap<String, ServedModel>,
    /// Publishes captured lookups (started with the first one).
    recorder: std::sync::OnceLock<crate::capture::Recorder>,
}

/// An error response: a status and a JSON body `{"error": "..."}`.
pub(crate) struct ApiError(StatusCode, String);

impl ServedSet {
    fn new(config: &Config, set: &crate::config::FeatureSetConfig) -> Result<ServedSet, Invalid> {
        let plan = crate::plan::SetPlan::compile(config, set).map_err(|e| e.reason)?;
        let subject = match &set.source {
            SourceConfig::Jetstream { subject, .. } => Some(subject.clone()),
            _ => None,
        };
        // Online rows leave out each plugin's version field (the aggregates are evaluated).
        let derived = plan.view.derived();
        let left_out = plan.view.left_out(set);
        let features = plan.fields.map(|mut fields| {
            fields.retain(|f| derived.contains(f) || !left_out.contains(f));
            fields
        });
        Ok(ServedSet {
            version: set.version,
            view: plan.view,
            max_age: plan.ttl,
            subject,
            features,
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.0,
            [(header::CONTENT_TYPE, "application/json")],
            json!({ "error": self.1 }).to_string(),
        )
            .into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl ApiError {
    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, message.into())
    }
}

impl Api {
    /// Builds everything requests need, from the config and the running services.
    pub fn new(
        config: &Config,
        store: Arc<dyn crate::store::OnlineStore>,
        bus: Option<crate::bus::Bus>,
        metrics: Arc<Metrics>,
        ready: Arc<AtomicBool>,
        registry: Option<Arc<crate::plugin::Registry>>,
        control: Option<tokio::sync::mpsc::Sender<sets::Apply>>,
    ) -> Result<Api, Invalid> {
        let data_dir = config.resolve(&config.host.data_dir);
        let mut served: HashMap<String, Arc<ServedSet>> = HashMap::new();
        let mut names: Vec<&str> = config.feature_sets.iter().map(|s| s.name.as_str()).collect();
        names.dedup();
        for name in names {
            let versions = config.feature_sets.iter().filter(|s| s.name == name);
            // The version chosen last over HTTP (`serve`), else the highest.
            let chosen = crate::catalog::serving_choice(&data_dir, name);
            let pick = versions
                .clone()
                .find(|s| Some(s.version) == chosen)
                .or_else(|| versions.max_by_key(|s| s.version));
            if let Some(set) = pick {
                served.insert(name.to_string(), Arc::new(ServedSet::new(config, set)?));
            }
        }
        let models = config
            .models
            .iter()
            .map(|m| {
                let latency = metrics.model_lookup_seconds(&m.name);
                (m.name.clone(), (Arc::from(m.name.as_str()), m.capture_one_in, latency))
            })
            .collect();
        Ok(Api {
            served: arc_swap::ArcSwap::from_pointee(served),
            definitions: arc_swap::ArcSwap::from_pointee(config.feature_sets.clone()),
            base: config.clone(),
            control,
            vectors: config
                .feature_vectors
                .iter()
                .map(|v| (v.name.clone(), v.features.clone()))
                .collect(),
            tokens: config.tokens.iter().map(Token::from_config).collect(),
            store,
            bus,
            metrics,
            ready,
            registry,
            plugin_dir: Some(crate::catalog::store_dir(&data_dir)),
            monitors: None,
            models,
            recorder: std::sync::OnceLock::new(),
        })
    }

    /// Serves the live statistics and drift of the monitored sets.
    pub fn monitoring(mut self, monitors: Arc<crate::runtime::Monitors>) -> Api {
        self.monitors = Some(monitors);
        self
    }

    /// The token of a request, allowed `scope` on `set`; refusals are counted.
    pub(crate) fn allow(&self, headers: &HeaderMap, scope: Scope, set: Option<&str>) -> Result<&Token, ApiError> {
        let header = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let checked = authenticate(&self.tokens, header).and_then(|t| t.allows(scope, set).map(|()| t));
        checked.map_err(|denied| self.refuse(denied))
    }

    /// The response to a refusal (counted).
    pub(crate) fn refuse(&self, denied: Denied) -> ApiError {
        self.metrics.refused.inc();
        match denied {
            Denied::Unauthenticated(why) => ApiError(StatusCode::UNAUTHORIZED, why.to_string()),
            Denied::Forbidden(why) => ApiError(StatusCode::FORBIDDEN, why),
        }
    }

    /// The recorder of captured lookups (`None`: no bus).
    fn recorder(&self) -> Option<&crate::capture::Recorder> {
        let bus = self.bus.as_ref()?;
        Some(
            self.recorder
                .get_or_init(|| crate::capture::Recorder::start(bus.clone(), self.metrics.clone())),
        )
    }

    fn set(&self, name: &str) -> Result<Arc<ServedSet>, ApiError> {
        self.served
            .load()
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no feature set \"{name}\"")))
    }
}

/// Largest plugin component accepted (a Python plugin is ~18 MB).
const MAX_PLUGIN_BYTES: usize = 64 << 20;

/// The routes.
pub fn router(api: Arc<Api>, max_body_bytes: usize) -> Router {
    let plugins = Router::new()
        .route(
            "/v1/plugins/{name}",
            axum::routing::put(plugins::deploy)
                .get(plugins::versions)
                .delete(plugins::remove),
        )
        .layer(DefaultBodyLimit::max(MAX_PLUGIN_BYTES));
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/v1/feature-sets", get(sets::list))
        .route("/v1/feature-sets/{name}", get(sets::describe).put(sets::apply))
        .route("/v1/feature-sets/{name}/serve/{version}", post(sets::serve))
        .route("/v1/feature-sets/{name}/dead-letters", get(sets::dead_letters))
        .route("/v1/feature-sets/{name}/drift", get(monitor::drift))
        .route("/v1/feature-sets/{name}/statistics", get(monitor::statistics))
        .route(
            "/v1/feature-sets/{name}/references/{reference}",
            get(monitor::get_reference).put(monitor::put_reference),
        )
        .route(
            "/v1/feature-sets/{name}/references/{reference}/activate",
            post(monitor::activate_reference),
        )
        .route("/v1/models", get(models::list))
        .route("/v1/models/{model}/predictions", post(models::predictions))
        .route("/v1/models/{model}/labels", post(models::labels))
        .route("/v1/models/{model}/captures", get(models::captures))
        .route("/v1/models/{model}/online/{entity}", get(models::online))
        .route("/v1/plugins", get(plugins::list))
        .route("/v1/plugins/{name}/rollback", post(plugins::rollback))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/features/{set}/{entity}", get(features::one))
        .route("/v1/features/lookup", post(features::many))
        .route("/v1/ingest/{set}", post(ingest))
        .route("/v1/training-sets", post(training::start))
        .route("/v1/training-sets/{id}", get(training::status))
        .route("/v1/training-sets/{id}/data", get(training::data))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .merge(plugins)
        .layer(axum::middleware::map_response(move |response: Response| async move {
            json_payload_too_large(response, max_body_bytes)
        }))
        .with_state(api)
}

/// axum answers a body over the limit with a plain-text 413; every error of this API is JSON.
fn json_payload_too_large(response: Response, max_body_bytes: usize) -> Response {
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE || json {
        return response;
    }
    ApiError(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the request body is larger than the limit: {max_body_bytes} bytes (http.max_body_bytes), \
             {MAX_PLUGIN_BYTES} bytes for a plugin; send fewer events per request"
        ),
    )
    .into_response()
}

/// One route as the OpenAPI document describes it.
pub struct RouteDoc {
    /// HTTP method, lowercase.
    pub method: &'static str,
    /// Path, with `{parameters}`.
    pub path: &'static str,
    /// The scope a token needs (`None`: no token).
    pub scope: Option<&'static str>,
    /// What it does.
    pub summary: &'static str,
}

/// Every route: the OpenAPI document is made from this list, and a test checks that the
/// router answers each of them (so the two cannot drift apart).
pub const ROUTES: &[RouteDoc] = &[
    RouteDoc { method: "get", path: "/healthz", scope: None, summary: "Liveness: 200 while the process serves." },
    RouteDoc { method: "get", path: "/readyz", scope: Some("read"), summary: "Readiness: the online store and the bus (Redis and NATS, or the embedded file) answer and the pipelines run (503 otherwise)." },
    RouteDoc { method: "get", path: "/metrics", scope: Some("read"), summary: "Prometheus metrics (OpenMetrics text): events in/out/failed/late per feature set, batch and lookup latency, drift scores and statuses per feature." },
    RouteDoc { method: "get", path: "/openapi.json", scope: Some("read"), summary: "This document." },
    RouteDoc { method: "get", path: "/v1/features/{set}/{entity}", scope: Some("read"), summary: "Every feature of one entity; windowed aggregates as of now or ?at= (RFC 3339 or epoch ms); status per value: present, null, not_found, outside_max_age." },
    RouteDoc { method: "post", path: "/v1/features/lookup", scope: Some("read"), summary: "Body {\"entities\": [...], \"features\": [\"set:feature\" | \"set:*\"] and/or \"vector\": name, \"at\"?}: many entities and sets in one round trip to the online store." },
    RouteDoc { method: "post", path: "/v1/ingest/{set}", scope: Some("ingest"), summary: "One JSON event, a JSON array of them or JSON lines, onto the set's input subject (same validation and dead letters as any event); 202 with the stream sequences." },
    RouteDoc { method: "get", path: "/v1/feature-sets", scope: Some("read"), summary: "Every feature set version: source, steps, targets, aggregates, counters, consumer lag." },
    RouteDoc { method: "get", path: "/v1/feature-sets/{name}", scope: Some("read"), summary: "The versions of one feature set, described." },
    RouteDoc { method: "put", path: "/v1/feature-sets/{name}", scope: Some("admin"), summary: "Apply a definition (the [[feature_set]] table as TOML, or JSON): validated, stored, started beside the running versions; ?serve=true also switches lookups to it." },
    RouteDoc { method: "post", path: "/v1/feature-sets/{name}/serve/{version}", scope: Some("admin"), summary: "Switch lookups and ingest of a feature set to one of its running versions." },
    RouteDoc { method: "get", path: "/v1/feature-sets/{name}/dead-letters", scope: Some("admin"), summary: "Events the set could not process (?kind=dlq, the default) or refused as late (?kind=late), with their original bytes, reason, step and input sequence; page with ?after=<last seq>&limit=<n>." },
    RouteDoc { method: "get", path: "/v1/feature-sets/{name}/drift", scope: Some("read"), summary: "Drift of a monitored set, per version and feature: status (ok, possible, drift) since which window, the last verdict's scores against the reference (psi, jensen_shannon, hellinger, tvd, ks; tvd, psi, chi_square_p for categories) and against the window before; the drifting features listed." },
    RouteDoc { method: "get", path: "/v1/feature-sets/{name}/statistics", scope: Some("read"), summary: "The closed windows of a monitored set, ?window= the set's window (default), 1h or 1d roll-ups, ?from=&to= (RFC 3339 or epoch ms): per feature count, nulls, mean, std, p5/p50/p95 or top values, bins, scores, verdict, status; kept a day (base windows), 30 days (hours), a year (days)." },
    RouteDoc { method: "put", path: "/v1/feature-sets/{name}/references/{reference}", scope: Some("admin"), summary: "Build and store a reference profile, as sluice profile does: body {\"training_set\": \"<training-set job id>\", \"time_field\"?} or {\"version\": N, \"from\"?, \"to\"?}, with \"features\"?: [names] to profile only those; 201 with each feature's summary. A set monitors against it when its [feature_set.monitor] reference names it." },
    RouteDoc { method: "get", path: "/v1/feature-sets/{name}/references/{reference}", scope: Some("read"), summary: "A stored reference: per feature its bin edges and shares, quantile table, count, mean and std, or frequent values." },
    RouteDoc { method: "post", path: "/v1/feature-sets/{name}/references/{reference}/activate", scope: Some("admin"), summary: "Switch the running monitors of the set (?version=N: of one version) to a stored reference without a restart: windows opened from now on are counted against it and judged by it, windows open now finish against theirs; segments follow its segments. Remembered across restarts until the definition names another reference." },
    RouteDoc { method: "get", path: "/v1/models", scope: Some("read"), summary: "The models of the config ([[model]]): the vector or features each is served, its prediction and label fields with their types, its capture rate, and how many records were stored or lost." },
    RouteDoc { method: "post", path: "/v1/models/{model}/predictions", scope: Some("capture"), summary: "What the model predicted for captured lookups: {\"request_id\", <prediction fields>} or an array; checked against the declared fields and types (nothing stored if any is wrong), stored before the 202, once per request id within the duplicate window." },
    RouteDoc { method: "post", path: "/v1/models/{model}/labels", scope: Some("capture"), summary: "Labels that came later: {\"request_id\", <label fields>} or {\"entity\", \"at\", <label fields>}, or an array; checked and stored as predictions are." },
    RouteDoc { method: "get", path: "/v1/models/{model}/online/{entity}", scope: Some("read"), summary: "The entity's last captured lookup for the model (its features as served, request id, capture time) and its last prediction posted with its entity, as the production-set writer keeps them online; null parts when none." },
    RouteDoc { method: "get", path: "/v1/models/{model}/captures", scope: Some("admin"), summary: "A model's capture records in the order stored (lookups served, predictions, labels), each with its sequence; page with ?after=<last seq>&limit=<n>." },
    RouteDoc { method: "post", path: "/v1/training-sets", scope: Some("read"), summary: "Start a point-in-time training-set job: {\"entities\": [rows with the sets' entity fields and \"t\"], \"features\": [\"set:feature\"] or \"vector\": name, \"time_field\"?}; 202 with its id (the token needs read on every set)." },
    RouteDoc { method: "get", path: "/v1/training-sets/{id}", scope: Some("read"), summary: "A training-set job's status: running, done (rows, features, download path) or failed (why)." },
    RouteDoc { method: "get", path: "/v1/training-sets/{id}/data", scope: Some("read"), summary: "The Parquet file of a finished training-set job (409 before)." },
    RouteDoc { method: "get", path: "/v1/plugins", scope: Some("read"), summary: "The active version of every plugin." },
    RouteDoc { method: "put", path: "/v1/plugins/{name}", scope: Some("deploy"), summary: "Deploy a component (the body): validated, compiled, smoke-tested, stored, hot-swapped into every feature set that uses it." },
    RouteDoc { method: "get", path: "/v1/plugins/{name}", scope: Some("read"), summary: "Kept versions of a plugin: which is active, deployed when and by which token." },
    RouteDoc { method: "post", path: "/v1/plugins/{name}/rollback", scope: Some("deploy"), summary: "Make the version before the active one active again." },
    RouteDoc { method: "delete", path: "/v1/plugins/{name}", scope: Some("deploy"), summary: "Remove a plugin; 409 while a feature set uses it." },
];

/// The OpenAPI 3.1 document, made from [`ROUTES`].
pub fn openapi_document() -> serde_json::Value {
    let mut paths = serde_json::Map::new();
    for route in ROUTES {
        let parameters: Vec<serde_json::Value> = route
            .path
            .split('/')
            .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        let mut operation = json!({
            "summary": route.summary,
            "parameters": parameters,
            "responses": {
                "200": { "description": "Success (JSON, or text for /metrics and /healthz)." },
                "400": { "description": "A malformed request: {\"error\": \"what was expected\"}." },
                "401": { "description": "No token or an unknown one." },
                "403": { "description": "The token lacks the scope or the feature set." },
            },
        });
        if let Some(scope) = route.scope {
            operation["security"] = json!([{ "bearer": [scope] }]);
        }
        let entry = paths.entry(route.path.to_string()).or_insert_with(|| json!({}));
        entry[route.method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Sluice", "version": env!("CARGO_PKG_VERSION") },
        "components": { "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } } },
        "paths": paths,
    })
}

/// The OpenAPI document; a `read` token, as every route but `/healthz` (the route table is
/// no secret, but nothing is served without a token).
async fn openapi(State(api): State<Arc<Api>>, headers: HeaderMap) -> Result<Response, ApiError> {
    api.allow(&headers, Scope::Read, None)?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        openapi_document().to_string(),
    )
        .into_response())
}

/// Ready when the pipelines run and the online store and the bus answer (Redis and NATS, or
/// the embedded file); a `read` token: unlike `/healthz`, it tells about the services behind.
async fn readyz(State(api): State<Arc<Api>>, headers: HeaderMap) -> Result<Response, ApiError> {
    api.allow(&headers, Scope::Read, None)?;
    let store_ok = api.store.ping().await;
    let bus_ok = match &api.bus {
        Some(bus) => bus.ping().await,
        None => true,
    };
    let pipelines = api.ready.load(Relaxed);
    let status = if store_ok && bus_ok && pipelines {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = match api.store.kind() {
        "redis" => json!({ "mode": "services", "redis": store_ok, "nats": bus_ok, "pipelines": pipelines }),
        _ => json!({ "mode": "embedded", "store": store_ok, "pipelines": pipelines }),
    };
    Ok((status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response())
}

async fn metrics(State(api): State<Arc<Api>>, headers: HeaderMap) -> Result<Response, ApiError> {
    api.allow(&headers, Scope::Read, None)?;
    for set in api.definitions.load().iter() {
        if let Some((pending, _)) = sets::consumer_lag(&api, set).await {
            api.metrics
                .set_pending(&format!("{}@v{}", set.name, set.version), pending);
        }
    }
    let text = api.metrics.render();
    Ok(([(header::CONTENT_TYPE, crate::metrics::Metrics::CONTENT_TYPE)], text).into_response())
}

/// `POST /v1/ingest/{set}`: one JSON object, a JSON array of them, or JSON lines. Each event
/// is published to the feature set's input subject, so it goes through the very same
/// decoding, graph and dead-letter handling as any other; the response says where they are.
async fn ingest(
    State(api): State<Arc<Api>>,
    Path(set): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let token = api.allow(&headers, Scope::Ingest, Some(&set))?;
    let served = api.set(&set)?;
    let (Some(subject), Some(bus)) = (&served.subject, &api.bus) else {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("feature set \"{set}\" does not read a stream subject: it cannot take events over HTTP"),
        ));
    };
    let messages = split_events(&body)?
        .into_iter()
        .map(|body| crate::bus::Publish {
            subject: subject.clone(),
            headers: Vec::new(),
            body,
        })
        .collect();
    let sequences = bus
        .publish(messages)
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("events not stored: {e}")))?;
    let first = sequences.iter().copied().min().unwrap_or(u64::MAX);
    let last = sequences.iter().copied().max().unwrap_or(0);
    let accepted = if last == 0 { 0 } else { last - first + 1 };
    api.metrics.ingested.inc_by(accepted);
    tracing::debug!(set = %set, token = %token.name, accepted, "ingested");
    let body = json!({ "set": set, "accepted": accepted, "first_seq": (accepted > 0).then_some(first), "last_seq": (accepted > 0).then_some(last) });
    Ok((
        StatusCode::ACCEPTED,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response())
}

/// The events of an ingest body: the elements of a JSON array, one JSON object, or lines.
/// A body with an event that is not a JSON object is refused whole (400, naming the event),
/// so nothing of it is published and the client can resend it corrected; an event that
/// parses but fails later (no key, a bad time, a plugin's error) is a dead letter, as on
/// the JetStream subject.
fn split_events(body: &Bytes) -> Result<Vec<Bytes>, ApiError> {
    const EXPECTED: &str = "expected a JSON object, an array of them, or JSON lines (one object per line)";
    let text = body.trim_ascii();
    if text.is_empty() {
        return Err(ApiError::bad_request(format!("empty body: {EXPECTED}")));
    }
    if text.starts_with(b"[") {
        let items: Vec<Box<serde_json::value::RawValue>> = serde_json::from_slice(text).map_err(|e| {
            ApiError::bad_request(format!("the body starts with [ but is not a JSON array of events: {e}"))
        })?;
        if let Some(at) = items.iter().position(|raw| !raw.get().starts_with('{')) {
            return Err(ApiError::bad_request(format!(
                "element {at} of the array is not a JSON object: {EXPECTED}; nothing was ingested"
            )));
        }
        return Ok(items
            .into_iter()
            .map(|raw| Bytes::copy_from_slice(raw.get().as_bytes()))
            .collect());
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(text).is_ok() {
        if !text.starts_with(b"{") {
            return Err(ApiError::bad_request(format!(
                "the body is not a JSON object: {EXPECTED}"
            )));
        }
        return Ok(vec![body.slice_ref(text)]);
    }
    // JSON lines: each line an event, each checked before any is published.
    let mut events = Vec::new();
    for (n, line) in body.split(|b| *b == b'\n').enumerate() {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let parsed = serde_json::from_slice::<serde::de::IgnoredAny>(line);
        if let Err(e) = parsed.as_ref().map_err(|e| e.to_string()).and_then(|_| {
            line.starts_with(b"{")
                .then_some(())
                .ok_or_else(|| "not an object".to_string())
        }) {
            return Err(ApiError::bad_request(format!(
                "line {} is not a JSON object ({e}): {EXPECTED}; nothing was ingested",
                n + 1
            )));
        }
        events.push(body.slice_ref(line));
    }
    Ok(events)
}
