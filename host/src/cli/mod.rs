//! The `sluice` command line. `main.rs` only parses arguments and calls [`run`].

pub mod demo;
pub mod plugin;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Sluice: a real-time feature store with WebAssembly transformations.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work with plugins (WebAssembly components).
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Checks a config file and prints every problem found (exit 1 if any).
    Validate {
        /// The config file (TOML), as `sluice validate FILE`.
        #[arg(value_name = "FILE", conflicts_with = "config")]
        file: Option<PathBuf>,
        /// The config file, as every other command takes it.
        #[arg(long, value_name = "FILE", required_unless_present = "file")]
        config: Option<PathBuf>,
    },
    /// Runs every feature set of a config until SIGINT or SIGTERM, then finishes the batch in
    /// hand, commits and exits 0. Serves the HTTP API when the config has `[http]`.
    Run {
        /// The config file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// A batch run: every feature set reads a file; exit once each file is processed and
        /// its Parquet rows are committed (0), or non-zero when every event of a set failed or
        /// more than --max-failed did. The HTTP API is not served.
        #[arg(long)]
        until_done: bool,
        /// With --until-done: failed events accepted per feature set, a share (`5%`, `0.05`)
        /// or a count (`100`).
        #[arg(long, default_value_t = crate::rows::MaxFailed::default(), requires = "until_done")]
        max_failed: crate::rows::MaxFailed,
    },
    /// The fraud example end to end: generates transactions, streams them through the
    /// example's graph, serves the API and prints a few users' features and `curl` lines.
    /// Runs in the embedded mode (no NATS, no Redis) unless given --nats and --redis.
    Demo(demo::DemoOptions),
    /// Runs a feature set's graph over historical events (files, or its input stream from
    /// the start) into a version of its own: Parquet rows, and with --online the online store.
    Backfill(crate::offline::backfill::BackfillOptions),
    /// Builds a point-in-time correct training set (Parquet) for entity rows with a time.
    TrainingSet(crate::offline::training::TrainingOptions),
    /// Builds a reference profile (what a model trained on) from a training set's Parquet file
    /// or a feature set version's offline rows, stores it under the data folder and prints a
    /// per-feature summary; live statistics are compared on its bins.
    Profile(crate::offline::reference::ProfileOptions),
    /// Compares the online store (as of now) with the offline rows evaluated at now, for a
    /// sample of entities; exit 1 on any mismatch.
    VerifyParity(crate::offline::parity::ParityOptions),
    /// Makes a new API token: prints the token (once; give it to the client) and the
    /// `[[token]]` block for the config, which holds only its SHA-256.
    Token {
        /// The token's name (logs and audit lines).
        #[arg(long)]
        name: String,
        /// Scopes, comma-separated: read, ingest, deploy, admin.
        #[arg(long, value_delimiter = ',', default_value = "read")]
        scopes: Vec<String>,
        /// Feature sets it is limited to, comma-separated (default: all).
        #[arg(long, value_delimiter = ',')]
        sets: Vec<String>,
    },
}

/// Plugin commands: for authors (no server needed), and deploying to a running server.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Deploys a component to a running server (`PUT /v1/plugins/<name>`): validated,
    /// compiled, smoke-tested and hot-swapped into every feature set that uses it.
    Deploy {
        /// The plugin's name.
        name: String,
        /// The component (.wasm).
        file: PathBuf,
        /// The server, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        server: String,
        /// A token with the deploy scope (default: $SLUICE_TOKEN).
        #[arg(long, env = "SLUICE_TOKEN", hide_env_values = true)]
        token: String,
    },
    /// Checks that a component is a Sluice plugin this host can run; prints its exports,
    /// imports, size and version.
    Check {
        /// The component (.wasm).
        file: PathBuf,
        /// Folder of compiled artifacts (default: $SLUICE_CACHE_DIR or ~/.cache/sluice/artifacts).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
    /// Runs a plugin over JSONL events from stdin and writes its output events as JSONL to
    /// stdout; per-event errors go to stderr. Exits 1 if any event failed.
    Run {
        /// The component (.wasm).
        file: PathBuf,
        /// How to run it.
        #[command(flatten)]
        options: plugin::RunOptions,
        /// Folder of compiled artifacts (default: $SLUICE_CACHE_DIR or ~/.cache/sluice/artifacts).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
}

/// Where compiled plugin artifacts are cached unless told otherwise.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SLUICE_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("sluice").join("artifacts")
}

/// Runs a parsed command; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Plugin(PluginCommand::Check { file, cache_dir }) => plugin::check(&file, cache_dir),
        Command::Plugin(PluginCommand::Deploy {
            name,
            file,
            server,
            token,
        }) => plugin::deploy(&name, &file, &server, &token),
        Command::Plugin(PluginCommand::Run {
            file,
            options,
            cache_dir,
        }) => plugin::run(
            &file,
            cache_dir,
            options,
            std::io::stdin().lock(),
            &mut std::io::stdout().lock(),
            &mut std::io::stderr(),
        ),
        Command::Validate { file, config } => match file.or(config) {
            Some(config) => validate(&config),
            None => anyhow::bail!("expected a config file: sluice validate --config FILE"),
        },
        Command::Run {
            config,
            until_done,
            max_failed,
        } => run_pipeline(&config, until_done.then_some(max_failed)),
        Command::Demo(options) => demo::run(options),
        Command::Backfill(options) => backfill(&options),
        Command::TrainingSet(options) => training_set(&options),
        Command::VerifyParity(options) => verify_parity(&options),
        Command::Profile(options) => {
            let (reference, path) = crate::offline::reference::build(&options)?;
            print!("{}", crate::offline::reference::summary(&reference, &path));
            Ok(0)
        }
        Command::Token { name, scopes, sets } => token(&name, &scopes, &sets),
    }
}

/// `sluice validate`: every problem of the config at once, then its notes.
fn validate(config: &std::path::Path) -> anyhow::Result<i32> {
    match crate::config::load(config) {
        Ok(c) => {
            println!(
                "{}: ok ({} feature sets, {} plugins)",
                config.display(),
                c.feature_sets.len(),
                c.plugins.len()
            );
            for note in crate::config::notes(&c) {
                println!("  note: {}: {}", note.key, note.message);
            }
            Ok(0)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(1)
        }
    }
}

/// `sluice backfill`: exits 1 when every event failed or more than `--max-failed`.
fn backfill(options: &crate::offline::backfill::BackfillOptions) -> anyhow::Result<i32> {
    let report = crate::offline::backfill::run(options)?;
    println!(
        "backfill {} v{}: {} events, {} rows ({} already committed), {} failed, {} late, in {:.1} s ({:.0} events/s)",
        options.set,
        options.version,
        report.events,
        report.rows,
        report.skipped,
        report.failed,
        report.late,
        report.seconds,
        report.events as f64 / report.seconds.max(1e-9)
    );
    if let Some(refusal) = report.refusal(options.max_failed) {
        eprintln!(
            "error: backfill {} v{}: {refusal}\n(the rows computed are committed; every failed event is in \
             the dead-letters file with its file and line)",
            options.set, options.version
        );
        return Ok(1);
    }
    if report.failed > 0 {
        eprintln!(
            "{} events failed; the most frequent reasons:\n{}",
            report.failed,
            report.failures.summary(5)
        );
    }
    Ok(0)
}

/// `sluice training-set`.
fn training_set(options: &crate::offline::training::TrainingOptions) -> anyhow::Result<i32> {
    if let Some(model) = &options.model {
        return model_training_set(options, model);
    }
    let report = crate::offline::training::run(options)?;
    println!(
        "{}: {} rows, features {} ({} values null: no row at or before t within the TTL), from {} offline rows in {:.1} s",
        options.out.display(),
        report.rows,
        report.features.join(", "),
        report.missing,
        report.offline_rows,
        report.seconds
    );
    Ok(0)
}

/// `sluice training-set --model`: retraining data from the model's production set.
fn model_training_set(options: &crate::offline::training::TrainingOptions, name: &str) -> anyhow::Result<i32> {
    let config = crate::config::load(&options.config)?;
    let model = config.models.iter().find(|m| m.name == name).ok_or_else(|| {
        let known: Vec<&str> = config.models.iter().map(|m| m.name.as_str()).collect();
        anyhow::anyhow!(
            "--model {name}: no [[model]] of that name in {} (declared: {})",
            options.config.display(),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )
    })?;
    let time = |flag: &str, text: &Option<String>| -> anyhow::Result<Option<i64>> {
        text.as_deref()
            .map(|text| crate::sources::decode::parse_time_text(text, flag))
            .transpose()
            .map_err(|e| anyhow::anyhow!("--{flag}: {e} (expected RFC 3339 or epoch milliseconds)"))
    };
    let job = crate::offline::production::ModelTraining {
        model,
        from: time("from", &options.from)?,
        to: time("to", &options.to)?,
        labelled_only: options.labelled_only,
    };
    let started = std::time::Instant::now();
    let report = crate::offline::production::build(&config, &job, &options.out)?;
    println!(
        "{}: {} rows (captured lookups), {} with a prediction, {} with a label; features {}; from {} records ({} repeats left out) in {:.1} s",
        options.out.display(),
        report.rows,
        report.predicted,
        report.labelled,
        report.features.join(", "),
        report.records,
        report.repeats,
        started.elapsed().as_secs_f64()
    );
    Ok(0)
}

/// `sluice verify-parity`: exits 1 when online and offline disagree.
fn verify_parity(options: &crate::offline::parity::ParityOptions) -> anyhow::Result<i32> {
    let report = match &options.model {
        Some(name) => {
            let config = crate::config::load(&options.config)?;
            let model = config.models.iter().find(|m| &m.name == name).ok_or_else(|| {
                let known: Vec<&str> = config.models.iter().map(|m| m.name.as_str()).collect();
                anyhow::anyhow!(
                    "--model {name}: no [[model]] of that name (declared: {})",
                    known.join(", ")
                )
            })?;
            let (report, skipped) = crate::offline::production::parity(&config, model)?;
            println!(
                "model {name}: {} entities, {} served values compared with the offline rows at their capture time",
                report.entities, report.values
            );
            for reason in &skipped {
                println!("  not compared: {reason}");
            }
            report
        }
        None => {
            let report = crate::offline::parity::run(options)?;
            println!(
                "{}: {} entities, {} values compared",
                options.set.as_deref().unwrap_or_default(),
                report.entities,
                report.values
            );
            report
        }
    };
    for (feature, (count, example)) in &report.mismatches {
        println!("  {feature}: {count} mismatches (e.g. {example})");
    }
    if !report.missing.is_empty() {
        println!(
            "  {} entities in one store only (e.g. {})",
            report.missing.len(),
            report.missing[0]
        );
    }
    if report.agrees() {
        println!("  online and offline agree");
        Ok(0)
    } else {
        Ok(1)
    }
}

/// `sluice token`: a new token, and the config lines that grant it.
fn token(name: &str, scopes: &[String], sets: &[String]) -> anyhow::Result<i32> {
    for scope in scopes {
        if !["read", "ingest", "capture", "deploy", "admin"].contains(&scope.as_str()) {
            eprintln!("unknown scope {scope:?}: expected read, ingest, capture, deploy or admin");
            return Ok(1);
        }
    }
    let token = crate::http::auth::new_token("slc")?;
    let quote = |items: &[String]| items.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
    eprintln!("token (shown once; the config keeps only its hash):");
    println!("{token}");
    eprintln!("\nadd to the config:\n");
    eprintln!(
        "[[token]]\nname = {name:?}\nsha256 = \"{}\"",
        crate::http::auth::hash_token(&token)
    );
    eprintln!("scopes = [{}]", quote(scopes));
    if !sets.is_empty() {
        eprintln!("sets = [{}]", quote(sets));
    }
    Ok(0)
}

/// `sluice run`; with `batch` (`--until-done` and its `--max-failed`), until every file is
/// processed.
fn run_pipeline(file: &std::path::Path, batch: Option<crate::rows::MaxFailed>) -> anyhow::Result<i32> {
    let config = crate::config::load(file)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
            tracing::info!("shutdown requested: finishing the batches in hand");
            let _ = stop.send(true);
        });
        let Some(max_failed) = batch else {
            crate::pipeline::run(config, shutdown).await?;
            return Ok(0);
        };
        let mut code = 0;
        for set in crate::pipeline::run_until_done(config, shutdown).await? {
            println!("{}: {} events, {} failed", set.label, set.events, set.failures.total);
            if !set.complete {
                eprintln!("error: {}: stopped before the end of its file (the log says why)", set.label);
                code = 1;
            } else if let Some(refusal) = set.failures.refusal(set.events, max_failed) {
                eprintln!("error: {}: {refusal}\n(the failed events are on the dead-letter subject)", set.label);
                code = 1;
            }
        }
        Ok(code)
    })
}
