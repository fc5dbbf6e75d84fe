//! Plugins by name, versions by content hash: deploy (compile, smoke-test, then swap
//! atomically), rollback (a pointer swap), removal (refused while in use).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use super::bindings::{HostState, TransformPre};
use super::handle::HandleInner;
use super::instance::Instance;
use super::{ContractInfo, Limits, NoLookup, OnlineLookup, PluginEngine, PluginError, PluginHandle};
use crate::event::Batch;

/// A validated plugin name: 1–64 characters of `a-z`, `0-9`, `-`, `_`, starting with a
/// letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PluginName(String);

impl PluginName {
    /// Validates a name.
    pub fn new(name: &str) -> Result<Self, PluginError> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            && name.as_bytes()[0].is_ascii_alphanumeric();
        if ok {
            Ok(PluginName(name.to_string()))
        } else {
            Err(PluginError::InvalidName(name.to_string()))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PluginName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One deployed version of a plugin, named by the content hash of its component.
pub struct PluginVersion {
    /// The plugin's name.
    pub name: PluginName,
    /// SHA-256 of the component, hex.
    pub hash: String,
    /// Component size in bytes.
    pub size: usize,
    /// When this version was first deployed.
    pub deployed_at: SystemTime,
    /// Who deployed it (a token name), if known.
    pub deployed_by: Option<String>,
    /// Its exports and imports.
    pub contract: ContractInfo,
    pre: TransformPre<HostState>,
}

impl fmt::Debug for PluginVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

impl PluginVersion {
    /// The short version: the first 12 hex digits of the content hash.
    pub fn version(&self) -> &str {
        &self.hash[..12]
    }

    /// `name@version`, as recorded with every output row and error.
    pub fn label(&self) -> String {
        format!("{}@{}", self.name, self.version())
    }

    pub(crate) fn pre(&self) -> &TransformPre<HostState> {
        &self.pre
    }

    /// Instantiates this version once (without `init`) and drops the instance, returning
    /// how long instantiation took: what a new instance costs, for benchmarks and diagnostics.
    pub fn time_instantiation(self: &Arc<Self>, engine: &PluginEngine) -> Result<std::time::Duration, PluginError> {
        let started = std::time::Instant::now();
        let instance = Instance::new(engine, self, &Limits::default(), Arc::new(NoLookup), None)?;
        let elapsed = started.elapsed();
        drop(instance);
        Ok(elapsed)
    }
}

/// The versions of one plugin and the active one.
pub(crate) struct PluginSlot {
    name: PluginName,
    active: ArcSwap<PluginVersion>,
    history: Mutex<Vec<Arc<PluginVersion>>>,
    users: Mutex<Vec<Weak<HandleInner>>>,
}

impl PluginSlot {
    pub(crate) fn name(&self) -> &PluginName {
        &self.name
    }

    pub(crate) fn active(&self) -> Arc<PluginVersion> {
        self.active.load_full()
    }

    pub(crate) fn add_user(&self, user: &Arc<HandleInner>) {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users.retain(|u| u.strong_count() > 0);
        users.push(Arc::downgrade(user));
    }

    fn live_users(&self) -> Vec<Arc<HandleInner>> {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users.iter().filter_map(Weak::upgrade).collect()
    }
}

/// What a deployment did.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The version now active.
    pub version: Arc<PluginVersion>,
    /// The version it replaced, if any.
    pub previous: Option<Arc<PluginVersion>>,
    /// Whether the compiled artifact came from the cache.
    pub cached: bool,
    /// Whether that exact version was already active (nothing changed).
    pub unchanged: bool,
}

/// All deployed plugins of this host.
pub struct Registry {
    engine: Arc<PluginEngine>,
    slots: RwLock<BTreeMap<PluginName, Arc<PluginSlot>>>,
    keep_versions: usize,
}

impl Registry {
    /// An empty registry keeping the last `keep_versions` versions of each plugin.
    pub fn new(engine: Arc<PluginEngine>, keep_versions: usize) -> Self {
        Registry {
            engine,
            slots: RwLock::new(BTreeMap::new()),
            keep_versions: keep_versions.max(2),
        }
    }

    /// The engine plugins run on.
    pub fn engine(&self) -> &Arc<PluginEngine> {
        &self.engine
    }

    fn slot(&self, name: &str) -> Result<Arc<PluginSlot>, PluginError> {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        let name = PluginName::new(name)?;
        slots
            .get(&name)
            .cloned()
            .ok_or_else(|| PluginError::NotFound(format!("no plugin named \"{name}\" is deployed")))
    }

    /// Deploys a component under `name`: compiles it (or loads the cached artifact), checks
    /// the contract, smoke-tests it with the configuration of every step that uses the
    /// plugin, then makes it active atomically. Batches in flight finish on the old version.
    pub fn deploy(&self, name: &str, bytes: &[u8], deployed_by: Option<&str>) -> Result<Deployment, PluginError> {
        let name = PluginName::new(name)?;
        let compiled = self.engine.compile(bytes)?;
        let existing = self.slots.read().unwrap_or_else(|e| e.into_inner()).get(&name).cloned();
        if let Some(slot) = &existing {
            let active = slot.active();
            if active.hash == compiled.hash {
                return Ok(Deployment {
                    version: active,
                    previous: None,
                    cached: compiled.cached,
                    unchanged: true,
                });
            }
        }
        let known = existing.as_ref().and_then(|slot| {
            let history = slot.history.lock().unwrap_or_else(|e| e.into_inner());
            history.iter().find(|v| v.hash == compiled.hash).cloned()
        });
        let version = match known {
            Some(version) => version,
            None => Arc::new(PluginVersion {
                name: name.clone(),
                hash: compiled.hash.clone(),
                size: compiled.size,
                deployed_at: SystemTime::now(),
                deployed_by: deployed_by.map(str::to_string),
                contract: compiled.contract.clone(),
                pre: self.engine.instance_pre(&compiled.component)?,
            }),
        };
        let users = existing.as_ref().map(|s| s.live_users()).unwrap_or_default();
        self.smoke_test(&version, &users)?;
        let previous = {
            // Decided under the write lock, so two first deployments of one name cannot race.
            let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
            match slots.get(&name) {
                Some(slot) => {
                    let mut history = slot.history.lock().unwrap_or_else(|e| e.into_inner());
                    history.retain(|v| v.hash != version.hash);
                    history.push(version.clone());
                    let excess = history.len().saturating_sub(self.keep_versions);
                    history.drain(..excess);
                    Some(slot.active.swap(version.clone()))
                }
                None => {
                    let slot = PluginSlot {
                        name: name.clone(),
                        active: ArcSwap::new(version.clone()),
                        history: Mutex::new(vec![version.clone()]),
                        users: Mutex::new(Vec::new()),
                    };
                    slots.insert(name, Arc::new(slot));
                    None
                }
            }
        };
        tracing::info!(plugin = %version.label(), by = deployed_by.unwrap_or("-"), cached = compiled.cached, "plugin deployed");
        Ok(Deployment {
            version,
            previous,
            cached: compiled.cached,
            unchanged: false,
        })
    }

    /// Instantiates the new version, runs `init` with each user's configuration and an empty
    /// batch through `process`, so a version that cannot run is refused before the swap.
    fn smoke_test(&self, version: &Arc<PluginVersion>, users: &[Arc<HandleInner>]) -> Result<(), PluginError> {
        let refused = |reason: String| PluginError::Init {
            plugin: version.label(),
            reason: format!("deploy refused: {reason}"),
        };
        let empty = Batch {
            fields: Vec::new(),
            events: Vec::new(),
        };
        let mut checks: Vec<Instance> = Vec::new();
        if users.is_empty() {
            checks.push(Instance::new(
                &self.engine,
                version,
                &Limits::default(),
                Arc::new(NoLookup),
                None,
            )?);
        }
        for user in users {
            checks.push(user.instantiate(version).map_err(|e| refused(e.to_string()))?);
        }
        for (instance, limits) in checks.iter_mut().zip(
            users
                .iter()
                .map(|u| u.limits.clone())
                .chain(std::iter::repeat(Limits::default())),
        ) {
            match instance.process(&empty, &limits) {
                Ok(p) if p.outcomes.is_empty() => {}
                Ok(p) => {
                    return Err(refused(format!(
                        "returned {} outcomes for an empty batch",
                        p.outcomes.len()
                    )))
                }
                Err(failure) => return Err(refused(format!("empty batch: {}", instance.explain(&failure)))),
            }
        }
        Ok(())
    }

    /// A handle running the active version of `name` with this configuration; `init` runs
    /// now, so a bad configuration is reported here.
    pub fn handle(
        &self,
        name: &str,
        config: Vec<(String, String)>,
        limits: Limits,
        lookup: Arc<dyn OnlineLookup>,
    ) -> Result<PluginHandle, PluginError> {
        PluginHandle::new(self.engine.clone(), self.slot(name)?, config, limits, lookup)
    }

    /// Makes the version deployed before the active one active again.
    pub fn rollback(&self, name: &str) -> Result<Arc<PluginVersion>, PluginError> {
        let slot = self.slot(name)?;
        let history = slot.history.lock().unwrap_or_else(|e| e.into_inner());
        let active = slot.active();
        let at = history.iter().position(|v| Arc::ptr_eq(v, &active)).unwrap_or(0);
        let previous = at.checked_sub(1).map(|i| history[i].clone()).ok_or_else(|| {
            PluginError::Conflict(format!("plugin \"{name}\" has no earlier version to roll back to"))
        })?;
        slot.active.store(previous.clone());
        tracing::info!(plugin = %previous.label(), "plugin rolled back");
        Ok(previous)
    }

    /// Makes a kept version active, by its version (a prefix of the content hash).
    pub fn activate(&self, name: &str, version: &str) -> Result<Arc<PluginVersion>, PluginError> {
        let slot = self.slot(name)?;
        let history = slot.history.lock().unwrap_or_else(|e| e.into_inner());
        let found = history
            .iter()
            .find(|v| !version.is_empty() && v.hash.starts_with(version))
            .cloned()
            .ok_or_else(|| PluginError::NotFound(format!("plugin \"{name}\" has no kept version {version}")))?;
        slot.active.store(found.clone());
        Ok(found)
    }

    /// The kept versions of a plugin, oldest first, with the active one marked.
    pub fn versions(&self, name: &str) -> Result<Vec<(Arc<PluginVersion>, bool)>, PluginError> {
        let slot = self.slot(name)?;
        let active = slot.active();
        let history = slot.history.lock().unwrap_or_else(|e| e.into_inner());
        Ok(history.iter().map(|v| (v.clone(), Arc::ptr_eq(v, &active))).collect())
    }

    /// The active version of every deployed plugin.
    pub fn list(&self) -> Vec<Arc<PluginVersion>> {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        slots.values().map(|s| s.active()).collect()
    }

    /// Removes a plugin; refused while a step uses it.
    pub fn remove(&self, name: &str) -> Result<(), PluginError> {
        let slot = self.slot(name)?;
        let users = slot.live_users().len();
        if users > 0 {
            return Err(PluginError::Conflict(format!(
                "plugin \"{name}\" is used by {users} running step(s); remove them first"
            )));
        }
        self.slots.write().unwrap_or_else(|e| e.into_inner()).remove(&slot.name);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_names_are_validated() {
        assert!(PluginName::new("currency").is_ok());
        assert!(PluginName::new("risk-v2_b").is_ok());
        for bad in ["", "Currency", "-x", "a/b", &"x".repeat(65)] {
            assert!(PluginName::new(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
