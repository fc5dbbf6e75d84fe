//! Counters, gauges and latency histograms of the pipeline and the API, kept in a
//! `prometheus-client` registry and rendered in the OpenMetrics text format at `/metrics`.
//! A feature set's or a plugin's handles are looked up once and kept: an update on a hot path
//! is an atomic add (a histogram takes an uncontended lock).

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds of the latency buckets, in seconds.
const BOUNDS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// One label (`set="tx@v1"`, `plugin="currency@ab12"`).
type Label = [(&'static str, String); 1];

/// The labels of a feature's drift score: set, version, feature, metric.
type DriftLabel = [(&'static str, String); 4];

/// The labels of a feature's drift status: set, version, feature.
type StatusLabel = [(&'static str, String); 3];

/// The labels of a segment's feature drift status: set, version, segment, feature.
type SegmentLabel = [(&'static str, String); 4];

/// A feature set version and one of its steps.
type StepLabel = [(&'static str, String); 2];

/// A family of latency histograms with the buckets above.
type Latencies = Family<Label, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    Histogram::new(BOUNDS)
}

/// Records a duration in a latency histogram, in seconds.
pub fn observe(histogram: &Histogram, took: Duration) {
    histogram.observe(took.as_secs_f64());
}

/// What one feature set version counts.
#[derive(Clone)]
pub struct SetMetrics {
    /// Input messages taken.
    pub events_in: Counter,
    /// Feature rows produced.
    pub rows_out: Counter,
    /// Events sent to the dead-letter subject.
    pub failed: Counter,
    /// Events refused as late.
    pub late: Counter,
    /// Time from taking a batch to its rows being published (before the Redis write).
    pub batch_seconds: Histogram,
}

/// What one plugin version counts (across the steps that run it).
#[derive(Clone)]
pub struct PluginMetrics {
    /// Batches handed to it.
    pub calls: Counter,
    /// Events in those batches.
    pub events: Counter,
    /// Events it failed (trap, timeout, memory, or its own error).
    pub errors: Counter,
    /// Time per batch.
    pub batch_seconds: Histogram,
}

/// The families of every feature set version's metrics.
struct SetFamilies {
    events_in: Family<Label, Counter>,
    rows_out: Family<Label, Counter>,
    failed: Family<Label, Counter>,
    late: Family<Label, Counter>,
    filtered: Family<StepLabel, Counter>,
    batch_seconds: Latencies,
    pending: Family<Label, Gauge>,
    drift: Family<DriftLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    drift_status: Family<StatusLabel, Gauge>,
    segment_drift_status: Family<SegmentLabel, Gauge>,
}

/// The families of every plugin version's metrics.
struct PluginFamilies {
    calls: Family<Label, Counter>,
    events: Family<Label, Counter>,
    errors: Family<Label, Counter>,
    batch_seconds: Latencies,
}

/// Every metric of a process, in one registry.
pub struct Metrics {
    registry: Registry,
    sets: SetFamilies,
    plugins: PluginFamilies,
    /// Online lookups answered.
    pub lookups: Counter,
    /// Online lookups that failed (Redis errors).
    pub lookup_errors: Counter,
    /// Lookup latency, request in to response out.
    pub lookup_seconds: Histogram,
    /// Events accepted by the ingest route.
    pub ingested: Counter,
    /// Requests refused for a missing or wrong token (401) or scope (403).
    pub refused: Counter,
    /// Capture records stored, per model.
    captured: Family<Label, Counter>,
    /// Capture records dropped (queue full, bus down), per model.
    capture_lost: Family<Label, Counter>,
    /// Latency of the lookups captured for a model, per model.
    model_lookup_seconds: Family<Label, Histogram>,
    /// Predictions and labels accepted, per model and kind.
    model_posts: Family<[(&'static str, String); 2], Counter>,
}

impl SetFamilies {
    /// New families, registered.
    fn registered(registry: &mut Registry) -> SetFamilies {
        let f = SetFamilies {
            events_in: Family::default(),
            rows_out: Family::default(),
            failed: Family::default(),
            late: Family::default(),
            filtered: Family::default(),
            batch_seconds: Family::new_with_constructor(latency),
            pending: Family::default(),
            drift: Family::default(),
            drift_status: Family::default(),
            segment_drift_status: Family::default(),
        };
        registry.register("sluice_events_in", "Input events taken", f.events_in.clone());
        registry.register("sluice_rows_out", "Feature rows produced", f.rows_out.clone());
        registry.register(
            "sluice_events_filtered",
            "Events a filter step dropped (its condition false or null), per step",
            f.filtered.clone(),
        );
        registry.register(
            "sluice_events_failed",
            "Events sent to the dead-letter subject",
            f.failed.clone(),
        );
        registry.register("sluice_events_late", "Events refused as late", f.late.clone());
        registry.register(
            "sluice_batch_seconds",
            "Batch processing time before the Redis write",
            f.batch_seconds.clone(),
        );
        registry.register(
            "sluice_consumer_pending",
            "Input messages not yet delivered to a feature set",
            f.pending.clone(),
        );
        registry.register(
            "sluice_feature_drift",
            "A feature's drift score in the last closed window, against the set's reference",
            f.drift.clone(),
        );
        registry.register(
            "sluice_feature_drift_status",
            "A feature's drift status: 0 ok, 1 possible, 2 drift, -1 not in the reference (never judged)",
            f.drift_status.clone(),
        );
        registry.register(
            "sluice_segment_drift_status",
            "A feature's drift status within one segment ([feature_set.monitor] segments): 0 ok, 1 possible, 2 drift, -1 not in the segment's reference",
            f.segment_drift_status.clone(),
        );
        f
    }
}

impl PluginFamilies {
    /// New families, registered.
    fn registered(registry: &mut Registry) -> PluginFamilies {
        let f = PluginFamilies {
            calls: Family::default(),
            events: Family::default(),
            errors: Family::default(),
            batch_seconds: Family::new_with_constructor(latency),
        };
        registry.register(
            "sluice_plugin_calls",
            "Batches handed to a plugin version",
            f.calls.clone(),
        );
        registry.register(
            "sluice_plugin_events",
            "Events handed to a plugin version",
            f.events.clone(),
        );
        registry.register(
            "sluice_plugin_errors",
            "Events a plugin version failed",
            f.errors.clone(),
        );
        registry.register(
            "sluice_plugin_batch_seconds",
            "Time a plugin version takes per batch",
            f.batch_seconds.clone(),
        );
        f
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let sets = SetFamilies::registered(&mut registry);
        let plugins = PluginFamilies::registered(&mut registry);
        let (lookups, lookup_errors, ingested, refused) = Default::default();
        let lookup_seconds = latency();
        registry.register("sluice_lookups", "Online lookups answered", Counter::clone(&lookups));
        registry.register(
            "sluice_lookup_errors",
            "Online lookups that failed",
            Counter::clone(&lookup_errors),
        );
        registry.register("sluice_lookup_seconds", "Online lookup latency", lookup_seconds.clone());
        registry.register(
            "sluice_ingested",
            "Events accepted over HTTP",
            Counter::clone(&ingested),
        );
        registry.register(
            "sluice_refused",
            "Requests refused by access control",
            Counter::clone(&refused),
        );
        let (captured, capture_lost) = (Family::default(), Family::default());
        registry.register(
            "sluice_captured",
            "Captured lookups, predictions and labels stored, per model",
            Family::clone(&captured),
        );
        registry.register(
            "sluice_capture_lost",
            "Captured lookups dropped (queue full or the bus down), per model",
            Family::clone(&capture_lost),
        );
        let model_lookup_seconds = Family::<Label, Histogram>::new_with_constructor(latency as fn() -> Histogram);
        registry.register(
            "sluice_model_lookup_seconds",
            "Latency of the lookups captured for a model, per model",
            model_lookup_seconds.clone(),
        );
        let model_posts = Family::default();
        registry.register(
            "sluice_model_records",
            "Predictions and labels accepted (retries included), per model and kind",
            Family::clone(&model_posts),
        );
        Metrics {
            registry,
            sets,
            plugins,
            lookups,
            lookup_errors,
            lookup_seconds,
            ingested,
            refused,
            captured,
            capture_lost,
            model_lookup_seconds,
            model_posts,
        }
    }
}

impl Metrics {
    /// The metrics of a feature set version (`<set>@v<version>`), created on first use.
    pub fn set(&self, label: &str) -> SetMetrics {
        let l: Label = [("set", label.to_string())];
        let f = &self.sets;
        SetMetrics {
            events_in: f.events_in.get_or_create_owned(&l),
            rows_out: f.rows_out.get_or_create_owned(&l),
            failed: f.failed.get_or_create_owned(&l),
            late: f.late.get_or_create_owned(&l),
            batch_seconds: f.batch_seconds.get_or_create_owned(&l),
        }
    }

    /// The events a filter step of a feature set version (`<set>@v<version>`) dropped.
    pub fn filtered(&self, set: &str, step: &str) -> Counter {
        let l: StepLabel = [("set", set.to_string()), ("step", step.to_string())];
        self.sets.filtered.get_or_create_owned(&l)
    }

    /// The metrics of a plugin version (`name@version`), created on first use.
    pub fn plugin(&self, label: &str) -> PluginMetrics {
        let l: Label = [("plugin", label.to_string())];
        let f = &self.plugins;
        PluginMetrics {
            calls: f.calls.get_or_create_owned(&l),
            events: f.events.get_or_create_owned(&l),
            errors: f.errors.get_or_create_owned(&l),
            batch_seconds: f.batch_seconds.get_or_create_owned(&l),
        }
    }

    /// Sets the input messages a feature set version has not been delivered yet (read from
    /// its consumer when `/metrics` is scraped).
    pub fn set_pending(&self, label: &str, pending: u64) {
        let l: Label = [("set", label.to_string())];
        self.sets
            .pending
            .get_or_create(&l)
            .set(pending.min(i64::MAX as u64) as i64);
    }

    /// Sets a feature's drift score (`metric`: `psi`, `ks`, …) of set `name` version `version`.
    pub fn set_drift(&self, (name, version, feature): (&str, u32, &str), metric: &str, score: f64) {
        let l: DriftLabel = [
            ("set", name.to_string()),
            ("version", version.to_string()),
            ("feature", feature.to_string()),
            ("metric", metric.to_string()),
        ];
        self.sets.drift.get_or_create(&l).set(score);
    }

    /// Sets a feature's drift status (0 ok, 1 possible, 2 drift).
    pub fn set_drift_status(&self, (name, version, feature): (&str, u32, &str), status: i64) {
        let l: StatusLabel = [
            ("set", name.to_string()),
            ("version", version.to_string()),
            ("feature", feature.to_string()),
        ];
        self.sets.drift_status.get_or_create(&l).set(status);
    }

    /// Sets a feature's drift status within a segment.
    pub fn set_segment_drift_status(&self, (name, version, feature): (&str, u32, &str), segment: &str, status: i64) {
        let l: SegmentLabel = [
            ("set", name.to_string()),
            ("version", version.to_string()),
            ("segment", segment.to_string()),
            ("feature", feature.to_string()),
        ];
        self.sets.segment_drift_status.get_or_create(&l).set(status);
    }

    /// The capture records of a model stored.
    pub fn captured(&self, model: &str) -> Counter {
        self.captured.get_or_create_owned(&[("model", model.to_string())])
    }

    /// The latency of the lookups captured for a model (a handle to keep: creating it
    /// allocates).
    pub fn model_lookup_seconds(&self, model: &str) -> Histogram {
        self.model_lookup_seconds
            .get_or_create_owned(&[("model", model.to_string())])
    }

    /// The predictions (`kind` = "prediction") or labels ("label") of a model accepted.
    pub fn model_records(&self, model: &str, kind: &str) -> Counter {
        self.model_posts
            .get_or_create_owned(&[("model", model.to_string()), ("kind", kind.to_string())])
    }

    /// The capture records of a model dropped.
    pub fn capture_lost(&self, model: &str) -> Counter {
        self.capture_lost.get_or_create_owned(&[("model", model.to_string())])
    }

    /// The OpenMetrics text format (`application/openmetrics-text`).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// The content type of [`Metrics::render`]'s text.
    pub const CONTENT_TYPE: &'static str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_gauges_and_histograms_render_in_openmetrics_text() {
        let metrics = Metrics::default();
        metrics.set("tx@v1").events_in.inc_by(3);
        // The same label gives the same counter.
        metrics.set("tx@v1").events_in.inc();
        metrics.set_pending("tx@v1", 7);
        observe(&metrics.lookup_seconds, Duration::from_micros(300));
        observe(&metrics.lookup_seconds, Duration::from_millis(2));
        let text = metrics.render();
        assert!(text.contains("sluice_events_in_total{set=\"tx@v1\"} 4"), "{text}");
        assert!(text.contains("sluice_consumer_pending{set=\"tx@v1\"} 7"), "{text}");
        assert!(text.contains("sluice_lookup_seconds_bucket{le=\"0.0005\"} 1"), "{text}");
        assert!(text.contains("sluice_lookup_seconds_bucket{le=\"+Inf\"} 2"), "{text}");
        assert!(text.contains("sluice_lookup_seconds_count 2"), "{text}");
        assert!(text.contains("# TYPE sluice_events_in counter"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
