//! Offline benchmarks: `backfill` events/s over the pipeline benchmark's workload read from
//! Parquet (the fraud example's graph: currency plugin, filter, windows, z-score), then a
//! training set of entity rows against the backfilled feature rows: time and peak memory.
//! Each phase runs as `sluice` in a child process, so its peak resident memory is its own.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use sluice_tests::live::Live;

/// Options of `sluice-bench offline`.
#[derive(clap::Args)]
pub struct Options {
    /// Events backfilled (feature rows are ~96% of them: unknown currencies and null amounts
    /// are dropped).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Entity rows of the training set.
    #[arg(long, default_value_t = 100_000)]
    entity_rows: u64,
    /// A Python with `feast` installed: also runs Feast's `get_historical_features` on the same
    /// rows and entity rows (bench/feast/historical.py) for the side-by-side.
    #[arg(long)]
    feast: Option<PathBuf>,
}

/// The pipeline benchmark's transactions, as columns (the event time a `timestamp[ms]`), and
/// their JSON-lines twin written to `jsonl` (the event time in epoch milliseconds).
fn columns(n: u64, jsonl: &Path) -> RecordBatch {
    use std::io::Write;
    let mut twin = std::io::BufWriter::new(std::fs::File::create(jsonl).unwrap());
    let (mut id, mut user, mut amount, mut currency, mut merchant, mut country, mut ts) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for i in 0..n {
        let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33;
        let u = (h % 10_000) * (h % 10_000) / 10_000;
        id.push(i as i64);
        user.push(format!("u{u}"));
        amount.push((i % 50 != 7).then(|| ((h % 100_000) as f64) / 100.0 + 0.01));
        currency.push(["USD", "EUR", "GBP", "JPY", "CHF"][(h % 5) as usize]);
        merchant.push(format!("m{}", h % 500));
        country.push(["US", "DE", "GB", "JP", "CH"][(h % 5) as usize]);
        ts.push(1_764_000_000_000i64 + i as i64 - ((h % 5) as i64) * 3);
        let line = serde_json::json!({
            "transaction_id": id[id.len() - 1], "user_id": user[user.len() - 1], "amount": amount[amount.len() - 1],
            "currency": currency[currency.len() - 1], "merchant": merchant[merchant.len() - 1],
            "country": country[country.len() - 1], "ts": ts[ts.len() - 1],
        });
        writeln!(twin, "{line}").unwrap();
    }
    twin.flush().unwrap();
    let arrays: Vec<(&str, ArrayRef)> = vec![
        ("transaction_id", Arc::new(Int64Array::from(id))),
        ("user_id", Arc::new(StringArray::from(user))),
        ("amount", Arc::new(Float64Array::from(amount))),
        ("currency", Arc::new(StringArray::from(currency))),
        ("merchant", Arc::new(StringArray::from(merchant))),
        ("country", Arc::new(StringArray::from(country))),
        ("ts", Arc::new(TimestampMillisecondArray::from(ts))),
    ];
    RecordBatch::try_from_iter(arrays).unwrap()
}

fn write_parquet(path: &Path, batch: &RecordBatch) {
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
}

/// Runs `sluice <args>` in a child process; returns (seconds, peak RSS in MiB, stdout).
fn child(args: &[String]) -> (f64, f64, String) {
    let started = Instant::now();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("child")
        .args(args)
        .output()
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "sluice {}: {stdout}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    let peak = stdout
        .lines()
        .find_map(|l| l.strip_prefix("peak_rss_kb="))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0;
    (seconds, peak, stdout)
}

/// The child: runs a `sluice` command, then prints its peak resident memory.
pub fn run_child(args: Vec<String>) -> anyhow::Result<()> {
    let cli = <sluice::cli::Cli as clap::Parser>::parse_from(std::iter::once("sluice".to_string()).chain(args));
    let code = sluice::cli::run(cli)?;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .map(|v| v.trim().trim_end_matches("kB").trim().to_string())
        .unwrap_or_default();
    println!("peak_rss_kb={peak}");
    std::process::exit(code);
}

/// Runs the benchmark and prints a table.
pub fn run(options: Options) -> anyhow::Result<()> {
    let live = Live::new("benchoffline");
    let config = live.write_config();
    let dir: PathBuf = live.dir.path().to_path_buf();
    let input = dir.join("history.parquet");
    let twin = dir.join("history.jsonl");
    let started = Instant::now();
    write_parquet(&input, &columns(options.events, &twin));
    eprintln!(
        "wrote {} events to {} in {:.1} s",
        options.events,
        input.display(),
        started.elapsed().as_secs_f64()
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let s = |v: &str| v.to_string();
    let backfill = |version: &str, input: &Path, extra: &[&str]| {
        let mut args = vec![
            s("backfill"),
            s("--config"),
            config.display().to_string(),
            s("--set"),
            live.set.clone(),
            s("--version"),
            s(version),
            s("--input"),
            input.display().to_string(),
            s("--quiet"),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        child(&args)
    };
    let (backfill_s, backfill_mb, backfill_out) = backfill("2", &input, &[]);
    // The same, sorted in 64 MiB: runs spill to disk and are merged.
    let (spill_s, spill_mb, _) = backfill("3", &input, &["--sort-memory-mb", "64"]);
    // The same events from their JSON-lines twin.
    let (twin_s, twin_mb, _) = backfill("4", &twin, &[]);
    // Entity rows: users of the workload, times spread over its span.
    let span = options.events as i64;
    let entities = dir.join("entities.jsonl");
    let mut text = String::new();
    for i in 0..options.entity_rows {
        let h = (i + 7).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33;
        let u = (h % 10_000) * (h % 10_000) / 10_000;
        let t = 1_764_000_000_000i64 + (h as i64 % span.max(1));
        text.push_str(&format!(
            "{{\"user_id\": \"u{u}\", \"t\": {t}, \"label\": {}}}\n",
            h % 2
        ));
    }
    std::fs::write(&entities, text)?;
    let out = dir.join("training.parquet");
    let set = &live.set;
    let features = format!("{set}:amount_usd,{set}:tx_count_1h,{set}:amount_usd_mean_24h,{set}:amount_zscore_24h");
    // The training set, in the default passes and in 4.
    let training = |out: &Path, partitions: &[&str]| {
        let mut args = vec![
            s("training-set"),
            s("--config"),
            config.display().to_string(),
            s("--entities"),
            entities.display().to_string(),
            s("--features"),
            features.clone(),
            s("--out"),
            out.display().to_string(),
            s("--version"),
            s("2"),
            s("--quiet"),
        ];
        args.extend(partitions.iter().map(|p| p.to_string()));
        child(&args)
    };
    let (training_s, training_mb, training_out) = training(&out, &[]);
    let (split_s, split_mb, _) = training(&dir.join("training4.parquet"), &["--partitions", "4"]);
    println!(
        "offline, fraud example's graph, {} events from Parquet; load average before: {}",
        options.events,
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!("| phase | wall time | throughput | peak RSS |");
    println!("|---|---|---|---|");
    println!(
        "| backfill ({} events → Parquet) | {backfill_s:.1} s | {:.0} events/s | {backfill_mb:.0} MiB |",
        options.events,
        options.events as f64 / backfill_s
    );
    println!(
        "| the same backfill sorted in 64 MiB (`--sort-memory-mb 64`: runs spilled and merged) | {spill_s:.1} s | {:.0} events/s | {spill_mb:.0} MiB |",
        options.events as f64 / spill_s
    );
    println!(
        "| the same backfill from the JSON-lines twin (same rows) | {twin_s:.1} s | {:.0} events/s | {twin_mb:.0} MiB |",
        options.events as f64 / twin_s
    );
    println!(
        "| training set ({} entity rows × 4 features, against the backfilled rows) | {training_s:.1} s | {:.0} entity rows/s | {training_mb:.0} MiB |",
        options.entity_rows,
        options.entity_rows as f64 / training_s
    );
    println!(
        "| the same training set in 4 passes (`--partitions 4`) | {split_s:.1} s | {:.0} entity rows/s | {split_mb:.0} MiB |",
        options.entity_rows as f64 / split_s
    );
    if let Some(python) = &options.feast {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("feast/historical.py");
        let rows = dir.join("offline").join(set).join("v2");
        let result = std::process::Command::new(python)
            .arg(&script)
            .arg(&rows)
            .arg(&entities)
            .arg(&out)
            .output()?;
        let stdout = String::from_utf8_lossy(&result.stdout);
        let Some(line) = stdout.lines().rev().find(|l| l.starts_with('{')) else {
            anyhow::bail!("feast: {}{}", stdout, String::from_utf8_lossy(&result.stderr));
        };
        let feast: serde_json::Value = serde_json::from_str(line)?;
        let seconds = feast["feast_seconds"].as_f64().unwrap_or(f64::NAN);
        println!(
            "| Feast get_historical_features (same rows and entity rows, file offline store; copies values, no re-evaluation at t): the query call alone; peak RSS of the whole process ({} MiB of it before the query) | {seconds:.1} s | {:.0} entity rows/s | {} MiB |",
            feast["feast_rss_before_query_mb"],
            options.entity_rows as f64 / seconds,
            feast["feast_peak_mb"]
        );
        println!(
            "\nSluice's training set took {:.2}× Feast's time; amount_usd agrees on {} of {} rows compared.",
            training_s / seconds,
            feast["amount_usd_agree"],
            feast["compared"]
        );
    }
    eprintln!("{}{}", backfill_out.trim(), training_out.trim());
    Ok(())
}
