//! Counters and latency histograms of the pipeline and the API, rendered in Prometheus's text
//! format at `/metrics`. Updates are relaxed atomic adds: nothing on a hot path waits.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BOUNDS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// A latency histogram.
#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BOUNDS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, took: Duration) {
        let s = took.as_secs_f64();
        let at = BOUNDS.iter().position(|b| s <= *b).unwrap_or(BOUNDS.len());
        self.counts[at].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(took.as_nanos() as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, bound) in BOUNDS.iter().enumerate() {
            cumulative += self.counts[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts[BOUNDS.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_ns.load(Relaxed) as f64 / 1e9;
        let labels = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{labels} {sum}");
        let _ = writeln!(out, "{name}_count{labels} {cumulative}");
    }
}

/// What one feature set version counts.
#[derive(Default)]
pub struct SetMetrics {
    /// Input messages taken.
    pub events_in: AtomicU64,
    /// Feature rows produced.
    pub rows_out: AtomicU64,
    /// Events sent to the dead-letter subject.
    pub failed: AtomicU64,
    /// Events refused as late.
    pub late: AtomicU64,
    /// Time from taking a batch to its rows being published (before the Redis write).
    pub batch_seconds: Histogram,
}

/// What one plugin version counts (across the steps that run it).
#[derive(Default)]
pub struct PluginMetrics {
    /// Batches handed to it.
    pub calls: AtomicU64,
    /// Events in those batches.
    pub events: AtomicU64,
    /// Events it failed (trap, timeout, memory, or its own error).
    pub errors: AtomicU64,
    /// Time per batch.
    pub batch_seconds: Histogram,
}

/// A counter of a labelled family: name, help, and where it is.
type Counter<T> = (&'static str, &'static str, fn(&T) -> &AtomicU64);

/// Renders counters and one histogram for every member of a labelled family (feature set
/// versions, plugin versions).
fn family<T>(
    out: &mut String,
    label: &str,
    members: &BTreeMap<String, Arc<T>>,
    counters: &[Counter<T>],
    histogram: (&str, &str, fn(&T) -> &Histogram),
) {
    for (name, help, get) in counters {
        let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} counter");
        for (member, m) in members {
            let _ = writeln!(out, "{name}{{{label}=\"{member}\"}} {}", get(m).load(Relaxed));
        }
    }
    let (name, help, get) = histogram;
    let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} histogram");
    for (member, m) in members {
        get(m).render(out, name, &format!("{label}=\"{member}\""));
    }
}

/// Every metric of a process.
#[derive(Default)]
pub struct Metrics {
    sets: Mutex<BTreeMap<String, Arc<SetMetrics>>>,
    plugins: Mutex<BTreeMap<String, Arc<PluginMetrics>>>,
    /// Online lookups answered, and failed.
    pub lookups: AtomicU64,
    /// Online lookups that failed (Redis errors).
    pub lookup_errors: AtomicU64,
    /// Lookup latency, request in to response out.
    pub lookup_seconds: Histogram,
    /// Events accepted by the ingest route.
    pub ingested: AtomicU64,
    /// Requests refused for a missing or wrong token (401) or scope (403).
    pub refused: AtomicU64,
}

impl Metrics {
    /// The counters of a feature set version (`<set>@v<version>`), created on first use.
    pub fn set(&self, label: &str) -> Arc<SetMetrics> {
        let mut sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        sets.entry(label.to_string()).or_default().clone()
    }

    /// The counters of a plugin version (`name@version`), created on first use.
    pub fn plugin(&self, label: &str) -> Arc<PluginMetrics> {
        let mut plugins = self.plugins.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = plugins.get(label) {
            return found.clone();
        }
        plugins.entry(label.to_string()).or_default().clone()
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let sets = self.sets.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let set_counters: [Counter<SetMetrics>; 4] = [
            ("sluice_events_in_total", "Input events taken", |m| &m.events_in),
            ("sluice_rows_out_total", "Feature rows produced", |m| &m.rows_out),
            (
                "sluice_events_failed_total",
                "Events sent to the dead-letter subject",
                |m| &m.failed,
            ),
            ("sluice_events_late_total", "Events refused as late", |m| &m.late),
        ];
        family(
            &mut out,
            "set",
            &sets,
            &set_counters,
            (
                "sluice_batch_seconds",
                "Batch processing time before the Redis write",
                |m| &m.batch_seconds,
            ),
        );
        for (name, help, value) in [
            ("sluice_lookups_total", "Online lookups answered", &self.lookups),
            (
                "sluice_lookup_errors_total",
                "Online lookups that failed",
                &self.lookup_errors,
            ),
            ("sluice_ingested_total", "Events accepted over HTTP", &self.ingested),
            (
                "sluice_refused_total",
                "Requests refused by access control",
                &self.refused,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}.\n# TYPE {name} counter\n{name} {}",
                value.load(Relaxed)
            );
        }
        let plugins = self.plugins.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let plugin_counters: [Counter<PluginMetrics>; 3] = [
            ("sluice_plugin_calls_total", "Batches handed to a plugin version", |m| {
                &m.calls
            }),
            ("sluice_plugin_events_total", "Events handed to a plugin version", |m| {
                &m.events
            }),
            ("sluice_plugin_errors_total", "Events a plugin version failed", |m| {
                &m.errors
            }),
        ];
        family(
            &mut out,
            "plugin",
            &plugins,
            &plugin_counters,
            (
                "sluice_plugin_batch_seconds",
                "Time a plugin version takes per batch",
                |m| &m.batch_seconds,
            ),
        );
        let _ = writeln!(
            out,
            "# HELP sluice_lookup_seconds Online lookup latency.\n# TYPE sluice_lookup_seconds histogram"
        );
        self.lookup_seconds.render(&mut out, "sluice_lookup_seconds", "");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render_in_prometheus_text() {
        let metrics = Metrics::default();
        metrics.set("tx@v1").events_in.fetch_add(3, Relaxed);
        metrics.lookup_seconds.observe(Duration::from_micros(300));
        metrics.lookup_seconds.observe(Duration::from_millis(2));
        let text = metrics.render();
        assert!(text.contains("sluice_events_in_total{set=\"tx@v1\"} 3"), "{text}");
        assert!(text.contains("sluice_lookup_seconds_bucket{le=\"0.0005\"} 1"), "{text}");
        assert!(text.contains("sluice_lookup_seconds_bucket{le=\"+Inf\"} 2"), "{text}");
        assert!(text.contains("sluice_lookup_seconds_count 2"), "{text}");
    }
}
