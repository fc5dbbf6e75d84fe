//! The wasmtime engine shared by every plugin: component model, epoch interruption (CPU
//! deadlines that hold for interpreters too), the pooling allocator with copy-on-write memory
//! images, and an on-disk cache of compiled artifacts keyed by content hash and engine
//! compatibility, so a restart does not recompile.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::{self, HostState, TransformPre};
use super::contract::{self, ContractInfo};
use super::{describe, PluginError};

/// Period of the epoch ticker: the resolution of call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// A compiled plugin component, checked against the contract.
#[derive(Clone)]
pub struct CompiledPlugin {
    /// The compiled component.
    pub component: Component,
    /// SHA-256 of the component bytes, hex: the content hash that names a version.
    pub hash: String,
    /// Size of the component in bytes.
    pub size: usize,
    /// What it exports and imports.
    pub contract: ContractInfo,
    /// Whether it was loaded from the artifact cache rather than compiled.
    pub cached: bool,
    /// Time spent compiling or loading it.
    pub load_time: Duration,
}

/// The engine, its linker and its artifact cache. One per process.
pub struct PluginEngine {
    engine: Engine,
    linker: Linker<HostState>,
    cache_dir: Option<PathBuf>,
    compat: String,
    ticker: Arc<Ticker>,
}

impl Drop for PluginEngine {
    fn drop(&mut self) {
        self.ticker.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.ticker.thread.get() {
            thread.unpark();
        }
    }
}

/// The epoch ticker: it advances the engine's epoch every [`EPOCH_TICK`] while a guest runs
/// (some [`Awake`] guard is held) and sleeps otherwise, so an idle host does not wake 200
/// times a second. A deadline counts ticks from when its call begins; while no guest runs
/// there is no deadline to count.
pub(crate) struct Ticker {
    busy: AtomicUsize,
    stop: AtomicBool,
    thread: std::sync::OnceLock<std::thread::Thread>,
}

/// Held while a guest runs (instantiation, `init`, `reads`, `process`): keeps the ticker going.
pub(crate) struct Awake(Arc<Ticker>);

impl Ticker {
    /// A guard that keeps the epoch advancing until it is dropped.
    pub(crate) fn awake(self: &Arc<Self>) -> Awake {
        if self.busy.fetch_add(1, Ordering::SeqCst) == 0 {
            if let Some(thread) = self.thread.get() {
                thread.unpark();
            }
        }
        Awake(self.clone())
    }
}

impl Drop for Awake {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

fn engine_config() -> Config {
    let mut pool = PoolingAllocationConfig::default();
    // Each memory slot reserves 4 GiB of address space plus guards (so bounds checks are
    // elided); 256 slots bound the reservation to about 1.5 TiB per engine.
    pool.total_component_instances(256)
        .total_core_instances(2048)
        .total_memories(256)
        .total_tables(2048)
        .total_stacks(256)
        .max_memory_size(1 << 30)
        .max_core_instances_per_component(64)
        .max_memories_per_component(16)
        .max_tables_per_component(64)
        .max_component_instance_size(1 << 20)
        .max_core_instance_size(4 << 20)
        .table_elements(100_000);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .concurrency_support(false)
        .epoch_interruption(true)
        .memory_init_cow(true)
        .parallel_compilation(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

impl PluginEngine {
    /// Creates the engine. With `cache_dir`, compiled artifacts are stored there and reused.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Arc<Self>, PluginError> {
        let engine = Engine::new(&engine_config()).map_err(|e| PluginError::Compile {
            plugin: "engine".into(),
            reason: describe(&e),
        })?;
        let linker = bindings::linker(&engine).map_err(|e| PluginError::Compile {
            plugin: "linker".into(),
            reason: describe(&e),
        })?;
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let compat = format!("{:016x}", hasher.finish());
        let ticker = spawn_ticker(engine.clone());
        if let Some(dir) = &cache_dir {
            fs::create_dir_all(dir).map_err(|e| cache_error(dir, e))?;
        }
        Ok(Arc::new(PluginEngine {
            engine,
            linker,
            cache_dir,
            compat,
            ticker,
        }))
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The epoch ticker (a guest call holds [`Ticker::awake`]).
    pub(crate) fn ticker(&self) -> &Arc<Ticker> {
        &self.ticker
    }

    /// Compiles a component (or loads it from the artifact cache) and checks it against the
    /// contract.
    pub fn compile(&self, bytes: &[u8]) -> Result<CompiledPlugin, PluginError> {
        contract::check_bytes(bytes)?;
        let started = Instant::now();
        let hash = hex::encode(Sha256::digest(bytes));
        let path = self
            .cache_dir
            .as_ref()
            .map(|d| d.join(format!("{hash}-{}.cwasm", self.compat)));
        let cached = path.as_deref().and_then(|p| self.load_cached(p));
        let (component, was_cached) = match cached {
            Some(component) => (component, true),
            None => {
                let component = Component::new(&self.engine, bytes).map_err(|e| PluginError::Compile {
                    plugin: hash[..12].to_string(),
                    reason: describe(&e),
                })?;
                if let Some(path) = &path {
                    self.store_cached(path, &component)?;
                }
                (component, false)
            }
        };
        let contract = contract::check(&self.engine, &component)?;
        Ok(CompiledPlugin {
            component,
            hash,
            size: bytes.len(),
            contract,
            cached: was_cached,
            load_time: started.elapsed(),
        })
    }

    fn load_cached(&self, path: &Path) -> Option<Component> {
        if !path.exists() {
            return None;
        }
        // SAFETY: the file was written by `store_cached` from `Component::serialize` of this
        // engine configuration (its name carries the engine compatibility hash) into a cache
        // folder owned by the host; a file that fails to load is recompiled and replaced.
        match unsafe { Component::deserialize_file(&self.engine, path) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), "artifact cache entry unusable, recompiling: {}", describe(&e));
                None
            }
        }
    }

    fn store_cached(&self, path: &Path, component: &Component) -> Result<(), PluginError> {
        let bytes = component.serialize().map_err(|e| PluginError::Cache {
            path: path.display().to_string(),
            reason: describe(&e),
        })?;
        // Unique per process and call: several threads may compile the same plugin at once.
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITES.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            fs::rename(&tmp, path)
        };
        write().map_err(|e| cache_error(path, e))
    }

    /// Links a compiled component against the host's imports, once per version.
    pub(crate) fn instance_pre(&self, component: &Component) -> Result<TransformPre<HostState>, PluginError> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| PluginError::Contract(describe(&e)))?;
        TransformPre::new(pre).map_err(|e| PluginError::Contract(describe(&e)))
    }
}

fn cache_error(path: &Path, e: std::io::Error) -> PluginError {
    PluginError::Cache {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

fn spawn_ticker(engine: Engine) -> Arc<Ticker> {
    let ticker = Arc::new(Ticker {
        busy: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        thread: std::sync::OnceLock::new(),
    });
    let shared = ticker.clone();
    let handle = std::thread::Builder::new()
        .name("sluice-epoch".into())
        .spawn(move || {
            while !shared.stop.load(Ordering::Relaxed) {
                if shared.busy.load(Ordering::SeqCst) == 0 {
                    // An `awake` after this check unparks us (or leaves the token that makes
                    // this park return at once).
                    std::thread::park_timeout(Duration::from_secs(1));
                    continue;
                }
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .expect("spawning the epoch ticker thread");
    let _ = ticker.thread.set(handle.thread().clone());
    ticker
}
