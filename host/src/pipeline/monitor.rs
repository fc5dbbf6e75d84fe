//! A monitored feature set version's live statistics: its monitor, built at start with its
//! reference (`[feature_set.monitor] reference`, refused by name when missing), and the timer
//! that closes its windows every second, sets the drift gauges and publishes each status
//! change on `sluice.drift.<set>` (JetStream, or the embedded log).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::{PipelineError, Services};
use crate::bus::Publish;
use crate::catalog::references::References;
use crate::config::{Config, FeatureSetConfig};
use crate::event_time::rfc3339;
use crate::monitor::drift::Status;
use crate::monitor::live::{ClosedWindow, SetMonitor};
use crate::runtime::SharedMonitor;

/// The set's monitor (registered with the services), or `None` when it is not monitored.
pub(super) fn open(
    config: &Config,
    set: &FeatureSetConfig,
    services: &Services,
) -> Result<Option<SharedMonitor>, PipelineError> {
    let Some(monitor) = &set.monitor else {
        return Ok(None);
    };
    let label = format!("{}@v{}", set.name, set.version);
    let fail = |reason: String| PipelineError::Build {
        set: label.clone(),
        reason,
    };
    let reference = match &monitor.reference {
        None => None,
        Some(name) => {
            let references = References::new(&config.resolve(&config.host.data_dir));
            let reference = references.load(&set.name, name).map_err(|e| {
                fail(format!(
                    "monitor.reference: {e} (build it with `sluice profile --set {} --name {name}`)",
                    set.name
                ))
            })?;
            Some(reference)
        }
    };
    let window = monitor
        .window
        .get()
        .map_err(|e| fail(format!("monitor.window: {e}")))?
        .as_micros() as i64;
    let lateness = set.allowed_lateness.as_ref().map_or(0, |l| l.micros());
    let mut skip = set.entity.clone();
    skip.push(set.timestamp.field.clone());
    let live = SetMonitor::new(window, lateness, reference, monitor.policy.clone(), skip);
    let shared = Arc::new(Mutex::new(live));
    services.monitors.insert(&label, shared.clone());
    Ok(Some(shared))
}

/// Closes the monitor's due windows every second until shutdown.
pub(super) async fn close_windows(
    set: FeatureSetConfig,
    monitor: SharedMonitor,
    services: Services,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let now = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64;
        let closed = monitor.lock().unwrap_or_else(|e| e.into_inner()).close_due(now);
        for window in &closed {
            report(&set, window, &services).await;
        }
    }
}

/// The gauges of a closed window, and its status changes as events.
async fn report(set: &FeatureSetConfig, window: &ClosedWindow, services: &Services) {
    let mut events = Vec::new();
    for (feature, stats) in &window.features {
        let at = (set.name.as_str(), set.version, feature.as_str());
        for (metric, score) in &stats.scores {
            services.metrics.set_drift(at, metric.name(), *score);
        }
        if stats.verdict.is_some() || stats.changed {
            let level = match stats.status {
                Status::Ok => 0,
                Status::Possible => 1,
                Status::Drift => 2,
            };
            services.metrics.set_drift_status(at, level);
        }
        if !stats.changed {
            continue;
        }
        tracing::info!(
            set = %set.name, version = set.version, feature = %feature, status = stats.status.name(),
            "feature drift status changed"
        );
        let body = serde_json::json!({
            "set": set.name, "version": set.version, "feature": feature, "status": stats.status,
            "window_start": rfc3339(window.start),
            "window_end": rfc3339(window.end),
            "count": stats.count, "scores": stats.scores,
        });
        events.push(Publish {
            subject: format!("sluice.drift.{}", set.name),
            headers: vec![(
                "Nats-Msg-Id",
                format!("drift:{}:v{}:{feature}:{}", set.name, set.version, window.start),
            )],
            body: body.to_string().into(),
        });
    }
    if !events.is_empty() {
        if let Err(e) = services.bus.publish(events).await {
            tracing::warn!(set = %set.name, "publishing drift status changes failed: {e}");
        }
    }
}
