//! Training-set jobs started over HTTP, kept under `<data_dir>/training-sets/<id>/`: the
//! entity rows (`entities.jsonl`), the status (`status.json`, written whole each time) and,
//! once done, the file (`training.parquet`). They outlive a restart.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{json, Value as Json};

use super::write_atomically;

/// The jobs of a data folder.
#[derive(Debug, Clone)]
pub struct TrainingJobs {
    dir: PathBuf,
}

/// One job's folder.
#[derive(Debug, Clone)]
pub struct TrainingJob {
    /// 16 hex digits.
    pub id: String,
    dir: PathBuf,
}

impl TrainingJobs {
    /// The jobs under `data_dir`.
    pub fn new(data_dir: &Path) -> TrainingJobs {
        TrainingJobs {
            dir: data_dir.join("training-sets"),
        }
    }

    /// Records a new job, running, for `by`, with its entity rows.
    pub fn create(
        &self,
        entities: &[serde_json::Map<String, Json>],
        by: &str,
        sets: &[&str],
    ) -> std::io::Result<TrainingJob> {
        let mut random = [0u8; 8];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
        let id = hex::encode(random);
        let job = TrainingJob {
            dir: self.dir.join(&id),
            id,
        };
        let mut lines = Vec::new();
        for row in entities {
            serde_json::to_writer(&mut lines, row)?;
            lines.push(b'\n');
        }
        write_atomically(&job.entities(), &lines)?;
        job.record(&json!({ "id": job.id, "status": "running", "by": by, "rows": entities.len(), "sets": sets }))?;
        Ok(job)
    }

    /// The job `id`, if it exists (an id is 16 hex digits, checked before it names a folder).
    pub fn find(&self, id: &str) -> Option<TrainingJob> {
        if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let job = TrainingJob {
            id: id.to_string(),
            dir: self.dir.join(id),
        };
        job.dir.join("status.json").exists().then_some(job)
    }
}

impl TrainingJob {
    /// Its entity rows, JSON lines.
    pub fn entities(&self) -> PathBuf {
        self.dir.join("entities.jsonl")
    }

    /// Where its training set is written.
    pub fn output(&self) -> PathBuf {
        self.dir.join("training.parquet")
    }

    /// Replaces its status.
    pub fn record(&self, status: &Json) -> std::io::Result<()> {
        write_atomically(&self.dir.join("status.json"), status.to_string().as_bytes())
    }

    /// Its status, the JSON text last recorded.
    pub fn status(&self) -> std::io::Result<String> {
        std::fs::read_to_string(self.dir.join("status.json"))
    }

    /// The feature sets it reads (recorded when it was created; `None` for a job recorded
    /// without them).
    pub fn sets(&self) -> std::io::Result<Option<Vec<String>>> {
        let status: Json = serde_json::from_str(&self.status()?)?;
        Ok(status["sets"]
            .as_array()
            .map(|sets| sets.iter().filter_map(|s| s.as_str().map(str::to_string)).collect()))
    }

    /// Its training set, once written.
    pub fn data(&self) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.output())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_is_found_again_by_its_id_and_a_made_up_id_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = TrainingJobs::new(dir.path());
        let row: serde_json::Map<String, Json> = serde_json::from_str(r#"{"user_id": "u1", "t": 5}"#).unwrap();
        let job = jobs.create(&[row], "ci", &["users"]).unwrap();
        assert_eq!(job.id.len(), 16);
        let found = jobs.find(&job.id).unwrap();
        assert!(found.status().unwrap().contains("\"running\""));
        assert_eq!(
            std::fs::read_to_string(found.entities()).unwrap(),
            "{\"user_id\":\"u1\",\"t\":5}\n"
        );
        found.record(&json!({ "status": "done" })).unwrap();
        assert_eq!(jobs.find(&job.id).unwrap().status().unwrap(), r#"{"status":"done"}"#);
        assert!(jobs.find("0123456789abcdef").is_none());
        assert!(jobs.find("../../etc/passwd").is_none());
        assert!(found.data().is_err(), "no file before the job writes it");
    }
}
