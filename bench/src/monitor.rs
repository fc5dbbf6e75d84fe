//! Live monitoring alone, on one thread: the profiling cost per event (a set of 100 features,
//! 80 numeric and 20 categorical, profiled into a window and counted into a reference's bins),
//! the time to close a window (summaries, scores against the reference and the window before,
//! verdicts) and the memory per feature (an open window, a closed one kept for the day, and
//! the checkpoint's bytes).

use std::collections::BTreeMap;
use std::time::Instant;

use sluice::event::{Event, Value};
use sluice::monitor::drift::Policy;
use sluice::monitor::live::SetMonitor;
use sluice::monitor::profile::Profile;
use sluice::monitor::reference::{Binned, Reference, ReferenceFeature};
use sluice::rows::Rows;

/// Options of `sluice-bench monitor`.
#[derive(clap::Args)]
pub struct Options {
    /// Features (a fifth of them categorical).
    #[arg(long, default_value_t = 100)]
    features: usize,
    /// Rows per window.
    #[arg(long, default_value_t = 100_000)]
    rows: u64,
    /// Windows closed.
    #[arg(long, default_value_t = 10)]
    windows: u64,
    /// Rows per batch.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
}

const SECOND: i64 = 1_000_000;

fn names(features: usize) -> Vec<String> {
    (0..features)
        .map(|f| if f % 5 == 4 { format!("c{f}") } else { format!("x{f}") })
        .collect()
}

/// A batch of rows: numbers from a hashed uniform-ish spread, categories among 12 values.
fn batch(fields: &[String], first: u64, n: usize, time: i64) -> Rows {
    let mut rows = Rows::new(fields.to_vec());
    for i in 0..n as u64 {
        let seq = first + i;
        let values = fields
            .iter()
            .enumerate()
            .map(|(f, name)| {
                let h = (seq ^ (f as u64) << 40).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20;
                if name.starts_with('c') {
                    Value::Text(
                        ["DE", "US", "FR", "GB", "IT", "ES", "NL", "SE", "PL", "CH", "AT", "BE"][(h % 12) as usize]
                            .into(),
                    )
                } else {
                    Value::Float((h % 10_000) as f64 / 10.0 + f as f64)
                }
            })
            .collect();
        rows.push(
            seq,
            Event {
                key: "k".into(),
                time,
                values,
            },
        );
    }
    rows
}

fn reference(fields: &[String]) -> Reference {
    let sample = batch(fields, 1_000_000_000, 50_000, 0);
    let mut profile = Profile::default();
    profile.add_rows(&sample, |_| false);
    let mut reference = Reference::from_profile(&profile, "bench", "bench", 1, "bench".into());
    let mut counted: BTreeMap<String, Binned> = BTreeMap::new();
    for (at, name) in fields.iter().enumerate() {
        let feature = &reference.features[name];
        if let ReferenceFeature::Numeric { edges, .. } = feature {
            let mut bins = feature.binned();
            for e in &sample.batch.events {
                if let Value::Float(x) = e.values[at] {
                    bins.add_number(edges, x);
                }
            }
            counted.insert(name.clone(), bins);
        }
    }
    reference.count_numbers(&counted);
    reference
}

pub fn run(options: Options) -> anyhow::Result<()> {
    let fields = names(options.features);
    let reference = reference(&fields);
    println!(
        "monitoring, {} features ({} categorical), {} rows per window, {} windows, batches of {}, one thread",
        options.features,
        options.features / 5,
        options.rows,
        options.windows,
        options.batch
    );
    // Inputs made before timing.
    let batches = (options.rows as usize).div_ceil(options.batch);
    let inputs: Vec<Rows> = (0..batches)
        .map(|b| batch(&fields, 1 + (b * options.batch) as u64, options.batch, 0))
        .collect();
    for with_reference in [false, true] {
        let mut monitor = SetMonitor::new(
            SECOND,
            0,
            with_reference.then(|| reference.clone()),
            Policy::default(),
            Vec::new(),
        );
        let (mut profiling, mut closing) = (0.0, 0.0);
        for w in 0..options.windows {
            let mut inputs: Vec<Rows> = inputs.clone();
            let offset = w * options.rows;
            for rows in &mut inputs {
                rows.seqs.iter_mut().for_each(|s| *s += offset);
                rows.batch.events.iter_mut().for_each(|e| e.time = w as i64 * SECOND);
            }
            let started = Instant::now();
            for rows in &inputs {
                monitor.add(rows);
            }
            profiling += started.elapsed().as_secs_f64();
            // The first call after rows closes on their time (not past this window yet);
            // the next, idle, on the clock: that one is timed.
            assert!(monitor.close_due((w as i64 + 10) * SECOND).is_empty());
            let started = Instant::now();
            let closed = monitor.close_due((w as i64 + 10) * SECOND);
            closing += started.elapsed().as_secs_f64();
            assert_eq!(closed.len(), 1);
        }
        let events = (options.rows * options.windows) as f64;
        println!(
            "{:<28} {:>10.0} ns/event {:>8.1} ns/event/feature {:>10.0} events/s   close a window: {:>7.2} ms",
            if with_reference {
                "profile + reference bins"
            } else {
                "profile only"
            },
            profiling * 1e9 / events,
            profiling * 1e9 / events / options.features as f64,
            events / profiling,
            closing * 1e3 / options.windows as f64
        );
    }
    memory(&options, &reference, &inputs);
    Ok(())
}

/// Heap bytes per feature: an open window after a window's rows, a closed window as kept, and
/// the checkpoint's size.
fn memory(options: &Options, reference: &Reference, inputs: &[Rows]) {
    let features = options.features as f64;
    let before = crate::counted_bytes(true);
    let mut monitor = SetMonitor::new(SECOND, 0, Some(reference.clone()), Policy::default(), Vec::new());
    for rows in inputs {
        monitor.add(rows);
    }
    let open = crate::counted_bytes(false).saturating_sub(before);
    let checkpoint = monitor
        .checkpoint()
        .map_or(0, |c| serde_json::to_vec(&c).map_or(0, |b| b.len()));
    let mut closed = monitor.close_due(10 * SECOND);
    closed.extend(monitor.close_due(10 * SECOND));
    let before = crate::counted_bytes(true);
    let copy = closed[0].clone();
    let kept = crate::counted_bytes(false).saturating_sub(before);
    let stored = serde_json::to_vec(&copy).map_or(0, |b| b.len());
    drop(copy);
    let minute = 60 * SECOND;
    let windows = sluice::monitor::live::kept(minute, minute)
        + sluice::monitor::live::kept(sluice::monitor::live::HOUR, minute)
        + sluice::monitor::live::kept(sluice::monitor::live::DAY, minute);
    let per = |bytes: usize| bytes as f64 / features;
    println!(
        "memory per feature: open window {:.0} B (three open: the window, its hour, its day), closed window {:.0} B \
         (kept: {windows} windows of 1m, 1h, 1d = {:.2} MB per feature), checkpoint {:.0} B, stored window {:.0} B",
        per(open),
        per(kept),
        per(kept) * windows as f64 / 1e6,
        per(checkpoint),
        per(stored),
    );
}
