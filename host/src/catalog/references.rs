//! Reference profiles, kept under `<data_dir>/references/<set>/<name>.json` (written whole or
//! not at all), so a restart finds them and every host of a set reads the same one; and the
//! reference a version's monitor was switched to over HTTP, `.active-v<version>.json` beside
//! them (a name never starts with `.`).

use std::path::{Path, PathBuf};

use super::write_atomically;
use crate::fault::{FileError, Invalid};
pub use crate::monitor::reference::check_name;
use crate::monitor::reference::Reference;

/// The reference a set version's monitor was switched to, and the one its definition named
/// then: the choice stands while the definition names that one still (a definition naming
/// another reference since is a newer choice).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ActiveChoice {
    /// The reference switched to.
    pub reference: String,
    /// The definition's `[feature_set.monitor] reference` when the first switch was made.
    pub instead_of: Option<String>,
}

/// The references of a data folder.
#[derive(Debug, Clone)]
pub struct References {
    dir: PathBuf,
}

/// Why a reference could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// None by that name.
    #[error("no reference \"{name}\" for feature set {set}")]
    Missing {
        /// The set.
        set: String,
        /// The name asked for.
        name: String,
    },
    /// A name that cannot name a file.
    #[error("{0}")]
    Invalid(#[from] Invalid),
    /// The file could not be read or written.
    #[error("{0}")]
    File(#[from] FileError),
}

impl References {
    /// The references under `data_dir`.
    pub fn new(data_dir: &Path) -> References {
        References {
            dir: data_dir.join("references"),
        }
    }

    fn path(&self, set: &str, name: &str) -> PathBuf {
        self.dir.join(set).join(format!("{name}.json"))
    }

    /// Stores a reference under its set and name (replacing one of the same name).
    pub fn save(&self, reference: &Reference) -> Result<PathBuf, ReferenceError> {
        check_name(&reference.name)?;
        let path = self.path(&reference.set, &reference.name);
        write_atomically(&path, &reference.to_json()).map_err(|e| FileError::unwritable(&path, e))?;
        Ok(path)
    }

    fn choice_path(&self, set: &str, version: u32) -> PathBuf {
        self.dir.join(set).join(format!(".active-v{version}.json"))
    }

    /// Stores the reference a set version's monitor now uses.
    pub fn choose(&self, set: &str, version: u32, choice: &ActiveChoice) -> Result<(), ReferenceError> {
        check_name(&choice.reference)?;
        let path = self.choice_path(set, version);
        let bytes = serde_json::to_vec(choice).expect("a choice is JSON");
        write_atomically(&path, &bytes).map_err(|e| FileError::unwritable(&path, e))?;
        Ok(())
    }

    /// The reference a set version's monitor was switched to, if it was.
    pub fn chosen(&self, set: &str, version: u32) -> Result<Option<ActiveChoice>, ReferenceError> {
        let path = self.choice_path(set, version);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| FileError::unreadable(&path, e).into()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FileError::unreadable(&path, e).into()),
        }
    }

    /// The reference a set version's monitor uses: the one switched to over HTTP while its
    /// definition names the one it replaced, else the definition's (`configured`).
    pub fn active(&self, set: &str, version: u32, configured: Option<&str>) -> Result<Option<String>, ReferenceError> {
        match self.chosen(set, version)? {
            Some(choice) if choice.instead_of.as_deref() == configured => Ok(Some(choice.reference)),
            Some(choice) => {
                tracing::info!(
                    set, version, switched_to = %choice.reference, configured = configured.unwrap_or("(none)"),
                    "the definition names another reference than the one the switch replaced: the definition's is used"
                );
                Ok(configured.map(str::to_string))
            }
            None => Ok(configured.map(str::to_string)),
        }
    }

    /// Reads a set's reference by name.
    pub fn load(&self, set: &str, name: &str) -> Result<Reference, ReferenceError> {
        check_name(name)?;
        let path = self.path(set, name);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ReferenceError::Missing {
                    set: set.to_string(),
                    name: name.to_string(),
                })
            }
            Err(e) => return Err(FileError::unreadable(&path, e).into()),
        };
        Reference::from_json(&bytes).map_err(|e| FileError::unreadable(&path, e).into())
    }
}
