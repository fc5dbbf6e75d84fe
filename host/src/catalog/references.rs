//! Reference profiles, kept under `<data_dir>/references/<set>/<name>.json` (written whole or
//! not at all), so a restart finds them and every host of a set reads the same one.

use std::path::{Path, PathBuf};

use super::write_atomically;
use crate::fault::{FileError, Invalid};
pub use crate::monitor::reference::check_name;
use crate::monitor::reference::Reference;

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
