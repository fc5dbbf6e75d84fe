//! `sluice run`: connects to NATS and Redis (or opens the embedded store when the config
//! names neither), deploys the configured plugins, and runs every feature set (and its
//! offline writer) until shutdown is requested; then each finishes the batch in hand,
//! commits, and returns.

mod feature_set;
mod monitor;
mod offline;

pub use crate::runtime::{deploy_plugins, PipelineError, Services, StoreLookup, StoreTiles};
pub use feature_set::{FeatureSetRunner, InputEnd};
pub use offline::OfflineRunner;

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::{Config, SourceConfig, TargetConfig};
use crate::rows::Tally;

/// Runs every feature set of the config until `shutdown` turns true.
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> Result<(), PipelineError> {
    run_with(config, shutdown, None).await
}

/// Like [`run`]; the HTTP API's bound address (when the config has `[http]`) is sent on
/// `bound` (tests bind port 0).
pub async fn run_with(
    config: Config,
    shutdown: watch::Receiver<bool>,
    bound: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
) -> Result<(), PipelineError> {
    let services = Services::connect(&config).await?;
    run_on(config, services, shutdown, bound).await
}

/// Like [`run_with`], on services already connected (the demo keeps a handle on them).
pub async fn run_on(
    config: Config,
    services: Services,
    shutdown: watch::Receiver<bool>,
    bound: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
) -> Result<(), PipelineError> {
    let config = with_stored_definitions(config);
    let lookup = Arc::new(StoreLookup::new(&config, services.store.clone())?);
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    let (control, mut applied) = tokio::sync::mpsc::channel::<crate::http::Apply>(4);
    if config.http.is_some() {
        let api = serve_api(&config, &services, ready.clone(), control, bound, &shutdown).await?;
        tasks.spawn(api);
    } else {
        drop(control);
    }
    for set in &config.feature_sets {
        start_set(&config, set, &services, &lookup, &shutdown, &mut tasks, None).await?;
    }
    for model in &config.models {
        // On threads and a NATS connection of its own; its start reported here.
        let (started, start) = tokio::sync::oneshot::channel();
        let (config, model, services, shutdown) = (config.clone(), model.clone(), services.clone(), shutdown.clone());
        tasks.spawn(in_background(format!("production-{}", model.name), async move {
            let opened = match services.with_own_connection(&config).await {
                Ok(services) => OfflineRunner::production(&config, &model, &services).await,
                Err(e) => Err(e),
            };
            match opened {
                Ok(runner) => {
                    let _ = started.send(Ok(()));
                    runner.run(shutdown).await;
                }
                Err(e) => {
                    let _ = started.send(Err(e));
                }
            }
        }));
        start
            .await
            .map_err(|_| PipelineError::Service("a production-set writer did not start".into()))??;
    }
    if let crate::bus::Bus::Embedded(store) = &services.bus {
        // Idle log subscriptions wait up to a second for an append: shutdown wakes them.
        // Detached, holding the store weakly: it must neither keep the run alive nor the
        // store's file open.
        let (store, mut stop) = (Arc::downgrade(store), shutdown.clone());
        tokio::spawn(async move {
            while !*stop.borrow_and_update() {
                if stop.changed().await.is_err() {
                    return;
                }
            }
            if let Some(store) = store.upgrade() {
                store.wake_waiters();
            }
        });
    }
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(feature_sets = config.feature_sets.len(), "pipeline running");
    loop {
        tokio::select! {
            done = tasks.join_next() => match done {
                None => break,
                Some(Err(e)) => tracing::error!("a pipeline task failed: {e}"),
                Some(Ok(())) => {}
            },
            Some(apply) = applied.recv() => {
                let started = start_set(&apply.config, &apply.set, &services, &lookup, &shutdown, &mut tasks, None).await;
                let _ = apply.done.send(started);
            }
        }
    }
    Ok(())
}

/// The config with the definitions applied over HTTP earlier (those that still fit it).
fn with_stored_definitions(mut config: Config) -> Config {
    let data_dir = config.resolve(&config.host.data_dir);
    for set in crate::catalog::stored_definitions(&data_dir) {
        if config
            .feature_sets
            .iter()
            .any(|s| s.name == set.name && s.version == set.version)
        {
            continue;
        }
        // Validated as applied: plugins deployed over HTTP are usable by name too.
        let mut with = config.clone();
        with.feature_sets.push(set.clone());
        for (name, component) in crate::catalog::stored_plugins(&crate::catalog::store_dir(&data_dir)) {
            with.plugins.entry(name).or_insert(component);
        }
        match crate::config::validate(&with).first() {
            None => config.feature_sets.push(set),
            Some(problem) => tracing::warn!(
                set = %set.name, version = set.version,
                "a definition applied over HTTP no longer fits the config, not started: {}: {}",
                problem.key, problem.message
            ),
        }
    }
    config
}

/// Binds the HTTP API of `config.http` (its address sent on `bound`) and returns the task
/// that serves it until shutdown; definitions applied over it arrive on `control`'s receiver.
async fn serve_api(
    config: &Config,
    services: &Services,
    ready: Arc<std::sync::atomic::AtomicBool>,
    control: tokio::sync::mpsc::Sender<crate::http::Apply>,
    bound: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
    shutdown: &watch::Receiver<bool>,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static, PipelineError> {
    let http = config.http.as_ref().expect("serve_api is called with [http]");
    let api = crate::http::Api::new(
        config,
        services.store.clone(),
        Some(services.bus.clone()),
        services.metrics.clone(),
        ready,
        Some(services.registry.clone()),
        Some(control),
    )
    .map_err(|e| PipelineError::Service(e.into()))?
    .monitoring(services.monitors.clone());
    let tls = match (&http.tls_cert, &http.tls_key) {
        (Some(cert), Some(key)) => Some(
            crate::http::tls_acceptor(&config.resolve(cert), &config.resolve(key))
                .map_err(|e| PipelineError::Service(e.into()))?,
        ),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(&http.bind)
        .await
        .map_err(|e| PipelineError::Service(format!("HTTP API on {}: {e}", http.bind)))?;
    if let (Some(bound), Ok(address)) = (bound, listener.local_addr()) {
        let _ = bound.send(address);
    }
    let (limit, shutdown) = (http.max_body_bytes, shutdown.clone());
    Ok(async move {
        if let Err(e) = crate::http::serve(listener, Arc::new(api), limit, tls, shutdown).await {
            tracing::error!("HTTP API stopped: {e}");
        }
    })
}

/// Starts one feature set version (and its offline writer) in `tasks`.
async fn start_set(
    config: &Config,
    set: &crate::config::FeatureSetConfig,
    services: &Services,
    lookup: &Arc<StoreLookup>,
    shutdown: &watch::Receiver<bool>,
    tasks: &mut tokio::task::JoinSet<()>,
    batch: Option<BatchRun>,
) -> Result<(), PipelineError> {
    let monitored = monitor::open(config, set, services).await?;
    let gate = monitored.as_ref().map(|_| feature_set::AckGate::default());
    let mut runner = FeatureSetRunner::start(config, set, services, lookup.clone(), shutdown)
        .await?
        .monitored(monitored.as_ref().map(|m| m.monitor.clone()))
        .defer_acks(gate.clone());
    // The monitor's last checkpoint waits for the runner's last batch.
    let (runner_done, runner_stopped) = watch::channel(false);
    if let Some(monitored) = monitored {
        tasks.spawn(monitor::close_windows(
            set.clone(),
            monitored,
            gate.unwrap_or_default(),
            services.clone(),
            shutdown.clone(),
            runner_stopped,
        ));
    }
    let input_ended = batch.as_ref().map(|b| b.ended.subscribe());
    if let Some(batch) = batch {
        runner = runner.batch_run(batch.ended, batch.failures);
    }
    let stop = shutdown.clone();
    tasks.spawn(async move {
        runner.run(stop).await;
        let _ = runner_done.send(true);
    });
    if set.targets.iter().any(|t| matches!(t, TargetConfig::Parquet { .. })) {
        let mut offline = OfflineRunner::start(config, set, services).await?;
        if let Some(input) = input_ended {
            offline = offline.until(input);
        }
        tasks.spawn(offline.run(shutdown.clone()));
    }
    Ok(())
}

/// Runs `work` on threads of its own (a runtime with one worker) at a lower CPU priority
/// (nice 10, inherited by the threads the runtime starts), so the lookups served beside it
/// come first when the cores are busy and it catches up when they are not: a model's
/// production-set writer parses every captured record, which on 2 cores took CPU time from
/// the lookups being captured (measured: p99 ×3 with the writer beside them, ×1.7 without).
async fn in_background(name: String, work: impl std::future::Future<Output = ()> + Send + 'static) {
    let (done, finished) = tokio::sync::oneshot::channel();
    let started = std::thread::Builder::new().name(name.clone()).spawn(move || {
        // On Linux, PRIO_PROCESS with 0 sets the calling thread's nice value only. Failing
        // (a sandbox refusing it) leaves the thread at the normal priority.
        // SAFETY: setpriority takes plain integers and touches no memory of ours.
        let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
        match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(name.clone())
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(work),
            Err(e) => tracing::error!(task = %name, "no runtime for it: {e}"),
        }
        let _ = done.send(());
    });
    match started {
        Ok(_) => {
            let _ = finished.await;
        }
        Err(e) => tracing::error!("a background thread could not start: {e}"),
    }
}

/// What a batch run watches of one feature set: how its input ended, its failures by reason.
struct BatchRun {
    ended: watch::Sender<Option<InputEnd>>,
    failures: Arc<std::sync::Mutex<Tally>>,
}

/// How one feature set of a batch run ended.
#[derive(Debug)]
pub struct SetOutcome {
    /// `name@vN`.
    pub label: String,
    /// Events read.
    pub events: u64,
    /// Failures by reason.
    pub failures: Tally,
    /// Whether the whole file was processed and every row made durable (online, Parquet).
    pub complete: bool,
}

/// `sluice run --until-done`: runs every feature set (each must read a file) until its file
/// is processed and its offline writer has committed every row, then returns how each ended.
/// The HTTP API is not served: a batch run ends by itself.
pub async fn run_until_done(config: Config, shutdown: watch::Receiver<bool>) -> Result<Vec<SetOutcome>, PipelineError> {
    if let Some(set) = config
        .feature_sets
        .iter()
        .find(|s| !matches!(s.source, SourceConfig::File { .. }))
    {
        return Err(PipelineError::Build {
            set: format!("{}@v{}", set.name, set.version),
            reason: "--until-done runs feature sets that read a file (`kind = \"file\"`); this one reads a \
                     stream, which never ends"
                .into(),
        });
    }
    let services = Services::connect(&config).await?;
    let lookup = Arc::new(StoreLookup::new(&config, services.store.clone())?);
    let mut tasks = tokio::task::JoinSet::new();
    let mut watched = Vec::new();
    for set in &config.feature_sets {
        let label = format!("{}@v{}", set.name, set.version);
        let (ended, input) = watch::channel(None);
        let failures = Arc::new(std::sync::Mutex::new(Tally::default()));
        let batch = BatchRun {
            ended,
            failures: failures.clone(),
        };
        start_set(&config, set, &services, &lookup, &shutdown, &mut tasks, Some(batch)).await?;
        watched.push((label, input, failures));
    }
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            tracing::error!("a pipeline task failed: {e}");
        }
    }
    Ok(watched
        .into_iter()
        .map(|(label, input, failures)| SetOutcome {
            events: services.metrics.set(&label).events_in.get(),
            complete: *input.borrow() == Some(InputEnd::Complete),
            failures: std::mem::take(&mut failures.lock().unwrap_or_else(|e| e.into_inner())),
            label,
        })
        .collect())
}
