//! A monitored feature set version's live statistics: its monitor, built at start with its
//! reference (`[feature_set.monitor] reference`, refused by name when missing) and resumed from
//! the windows it stored before, and the timer that closes its windows every second, writes
//! them to the store's time series and to Parquet ([`WindowSink`]), sets the drift gauges and
//! publishes each status change on `sluice.drift.<set>` (JetStream, or the embedded log).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::feature_set::AckGate;
use super::{PipelineError, Services};
use crate::bus::Publish;
use crate::catalog::references::References;
use crate::config::{Config, FeatureSetConfig};
use crate::event_time::rfc3339;
use crate::monitor::drift::Status;
use crate::monitor::live::{Checkpoint, ClosedWindow, SetMonitor};
use crate::monitor::window::Window;
use crate::runtime::SharedMonitor;
use crate::targets::windows::WindowSink;

/// A monitored set version: its monitor and where its closed windows go.
pub(super) struct Monitored {
    pub monitor: SharedMonitor,
    pub sink: WindowSink,
}

/// The set's monitor (registered with the services) resumed from its stored windows, or
/// `None` when it is not monitored.
pub(super) async fn open(
    config: &Config,
    set: &FeatureSetConfig,
    services: &Services,
) -> Result<Option<Monitored>, PipelineError> {
    let Some(monitor) = &set.monitor else {
        return Ok(None);
    };
    let label = format!("{}@v{}", set.name, set.version);
    let fail = |reason: String| PipelineError::Build {
        set: label.clone(),
        reason,
    };
    let references = References::new(&config.resolve(&config.host.data_dir));
    let active = references
        .active(&set.name, set.version, monitor.reference.as_deref())
        .map_err(|e| fail(format!("monitor.reference: {e}")))?;
    let reference = match &active {
        None => None,
        Some(name) => {
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
    let skip = set.not_features();
    let mut live = SetMonitor::new(window, lateness, reference, monitor.policy.clone(), skip);
    if let Err(e) = segmented(&mut live, monitor, active.as_deref()) {
        return Err(fail(e));
    }
    let segments = segment_names(&live);
    let sink = WindowSink::new(
        services.store.clone(),
        crate::keys::set_prefix(&services.prefix, &set.name, set.version),
        &set.name,
        set.version,
        &offline_root(config, set),
        window,
    );
    let stored = sink
        .restore(&live.widths(), &segments)
        .await
        .map_err(|e| fail(format!("reading its stored monitoring windows: {e}")))?;
    if !stored.is_empty() {
        tracing::info!(set = %label, windows = stored.len(), "monitoring resumed from the stored windows");
    }
    live.resume(stored, now());
    let checkpoint = sink
        .load_open()
        .await
        .map_err(|e| fail(format!("reading its monitoring checkpoint: {e}")))?;
    if let Some(bytes) = checkpoint {
        let checkpoint: Checkpoint<Window> = serde_json::from_slice(&bytes)
            .map_err(|e| fail(format!("its monitoring checkpoint does not read back: {e}")))?;
        // Windows open when the active reference was switched still count against the
        // earlier one.
        let active = live.reference().map(|r| r.id());
        for id in checkpoint.references() {
            if Some(&id) == active.as_ref() {
                continue;
            }
            let name = id.split('@').next().unwrap_or_default();
            match references.load(&set.name, name) {
                Ok(earlier) if earlier.id() == id => live.hold(earlier),
                // resume_open says what it leaves out.
                _ => {}
            }
        }
        live.resume_open(checkpoint);
    }
    let shared = Arc::new(Mutex::new(live));
    services.monitors.insert(&label, shared.clone());
    Ok(Some(Monitored { monitor: shared, sink }))
}

/// Adds the segments' monitors when the set has segments; a reference built without them
/// (or by other fields) is refused with the command that rebuilds it.
fn segmented(
    live: &mut SetMonitor,
    monitor: &crate::monitor::live::MonitorConfig,
    active: Option<&str>,
) -> Result<(), String> {
    if monitor.segments.is_empty() {
        return Ok(());
    }
    crate::monitor::reference::check_segments(live.reference(), active, &monitor.segments)?;
    let whole = std::mem::replace(live, SetMonitor::new(1, 0, None, Default::default(), Vec::new()));
    *live = whole.with_segments(monitor.segments.clone());
    Ok(())
}

/// The segments a monitor watches.
fn segment_names(live: &SetMonitor) -> Vec<String> {
    live.segments().map(|(s, _)| s.clone()).collect()
}

/// Where a set's monitoring Parquet goes: its Parquet target's root, else the data folder.
fn offline_root(config: &Config, set: &FeatureSetConfig) -> std::path::PathBuf {
    set.targets
        .iter()
        .find_map(|t| match t {
            crate::config::TargetConfig::Parquet { root, .. } => Some(config.resolve(root)),
            _ => None,
        })
        .unwrap_or_else(|| config.resolve(&config.host.data_dir))
}

fn now() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64
}

/// Closes the monitor's due windows every second until shutdown: each is stored (retried
/// until it is), then reported. The open windows are checkpointed every 250 ms, and each
/// stored checkpoint releases the runner's held ack it covers; the last checkpoint follows
/// the runner's final batch (`runner_stopped`), so a graceful stop loses nothing.
pub(super) async fn close_windows(
    set: FeatureSetConfig,
    monitored: Monitored,
    gate: AckGate,
    services: Services,
    mut shutdown: watch::Receiver<bool>,
    mut runner_stopped: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut ticks = 0u64;
    let mut unwritten = Vec::new();
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = shutdown.wait_for(|stop| *stop) => true,
        };
        if stopping {
            let stopped = tokio::time::timeout(Duration::from_secs(30), runner_stopped.wait_for(|done| *done)).await;
            drop(stopped);
            if unwritten.is_empty() || monitored.sink.write(&unwritten).await.is_ok() {
                checkpoint(&set, &monitored, &gate).await;
            }
            return;
        }
        ticks += 1;
        // Windows are closed, and those not yet stored written, on every fourth tick (each
        // second).
        let closing = ticks % 4 == 1;
        let closed = if closing {
            monitored
                .monitor
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .close_due(now())
        } else {
            Vec::new()
        };
        unwritten.extend(closed.iter().cloned());
        if closing && !unwritten.is_empty() {
            match monitored.sink.write(&unwritten).await {
                Ok(()) => unwritten.clear(),
                Err(e) => {
                    tracing::warn!(set = %set.name, "storing closed monitoring windows failed (retried in 1 s): {e}")
                }
            }
        }
        // The checkpoint follows the closed windows it no longer holds.
        if unwritten.is_empty() {
            checkpoint(&set, &monitored, &gate).await;
        }
        if closed.is_empty() {
            continue;
        }
        let base = monitored.monitor.lock().unwrap_or_else(|e| e.into_inner()).window();
        for window in closed.iter().filter(|w| w.width() == base) {
            // Every base window is reported: the whole set's and each segment's.
            report(&set, window, &services).await;
        }
    }
}

/// Stores a checkpoint ([`save_checkpoint`]) and acknowledges the runner's held batch if
/// the stored checkpoint covers it.
async fn checkpoint(set: &FeatureSetConfig, monitored: &Monitored, gate: &AckGate) {
    if let Some(covered) = save_checkpoint(set, monitored).await {
        release(set, gate, covered).await;
    }
}

/// Stores the open windows if rows came since the last checkpoint; returns the input
/// sequence the stored checkpoint covers (`None`: it could not be stored).
async fn save_checkpoint(set: &FeatureSetConfig, monitored: &Monitored) -> Option<u64> {
    let (bytes, through) = {
        let mut monitor = monitored.monitor.lock().unwrap_or_else(|e| e.into_inner());
        let through = monitor.through();
        (monitor.checkpoint().map(|c| serde_json::to_vec(&c)), through)
    };
    match bytes {
        None => Some(through),
        Some(Err(e)) => {
            tracing::warn!(set = %set.name, "encoding the monitoring checkpoint failed: {e}");
            None
        }
        Some(Ok(bytes)) => match monitored.sink.save_open(&bytes).await {
            Ok(()) => Some(through),
            Err(e) => {
                // Stored again next time, rows or not.
                monitored.monitor.lock().unwrap_or_else(|e| e.into_inner()).unsaved();
                tracing::warn!(set = %set.name, "storing the monitoring checkpoint failed: {e}");
                None
            }
        },
    }
}

/// Acknowledges the runner's latest batch if a stored checkpoint covers it.
async fn release(set: &FeatureSetConfig, gate: &AckGate, covered: u64) {
    let ack = {
        let mut held = gate.lock().unwrap_or_else(|e| e.into_inner());
        match held.as_ref() {
            Some((seq, _)) if *seq <= covered => held.take().map(|(_, ack)| ack),
            _ => None,
        }
    };
    if let Some(ack) = ack {
        if let Err(e) = ack.ack().await {
            tracing::warn!(set = %set.name, "ack failed (the batch will be redelivered and skipped): {e}");
        }
    }
}

/// The gauges of a closed window, and its status changes as events.
async fn report(set: &FeatureSetConfig, window: &ClosedWindow, services: &Services) {
    let events = gauges_and_events(set, window, services);
    if !events.is_empty() {
        if let Err(e) = services.bus.publish(events).await {
            tracing::warn!(set = %set.name, "publishing drift status changes failed: {e}");
        }
    }
}

/// Sets a closed window's gauges; returns its status changes as events to publish.
fn gauges_and_events(set: &FeatureSetConfig, window: &ClosedWindow, services: &Services) -> Vec<Publish> {
    let mut events = Vec::new();
    let segment = window.segment.as_deref();
    for (feature, stats) in &window.features {
        let at = (set.name.as_str(), set.version, feature.as_str());
        let level = if stats.no_reference {
            Some(-1)
        } else if stats.verdict.is_some() || stats.changed {
            Some(match stats.status {
                Status::Ok => 0,
                Status::Possible => 1,
                Status::Drift => 2,
            })
        } else {
            None
        };
        match segment {
            None => {
                for (metric, score) in &stats.scores {
                    services.metrics.set_drift(at, metric.name(), *score);
                }
                if let Some(level) = level {
                    services.metrics.set_drift_status(at, level);
                }
            }
            Some(segment) => {
                if let Some(level) = level {
                    services.metrics.set_segment_drift_status(at, segment, level);
                }
            }
        }
        if !stats.changed {
            continue;
        }
        tracing::info!(
            set = %set.name, version = set.version, segment = segment.unwrap_or("(all)"), feature = %feature,
            status = stats.status.name(), "feature drift status changed"
        );
        let mut body = serde_json::json!({
            "set": set.name, "version": set.version, "feature": feature, "status": stats.status,
            "window_start": rfc3339(window.start),
            "window_end": rfc3339(window.end),
            "count": stats.count, "scores": stats.scores,
        });
        if let Some(segment) = segment {
            body["segment"] = segment.into();
        }
        let id = match segment {
            None => format!("drift:{}:v{}:{feature}:{}", set.name, set.version, window.start),
            Some(s) => format!("drift:{}:v{}:{s}:{feature}:{}", set.name, set.version, window.start),
        };
        events.push(Publish {
            subject: format!("sluice.drift.{}", set.name),
            headers: vec![("Nats-Msg-Id", id)],
            body: body.to_string().into(),
        });
    }
    events
}
