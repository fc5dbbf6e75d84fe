//! The dead-letters file of a backfill.

use std::io::Write;
use std::path::PathBuf;

use super::input::Origin;
use crate::rows::Failure;

/// The dead-letters file, written as failures come (a backfill where every event fails holds
/// none of them in memory). An earlier run's file is replaced (a re-run fails the same events
/// again); none is left when nothing failed.
pub(super) struct LetterFile {
    path: PathBuf,
    out: Option<std::io::BufWriter<std::fs::File>>,
    /// Failures written.
    pub(super) count: u64,
}

impl LetterFile {
    pub(super) fn new(path: PathBuf) -> LetterFile {
        let _ = std::fs::remove_file(&path);
        LetterFile {
            path,
            out: None,
            count: 0,
        }
    }

    pub(super) fn write(&mut self, failure: &Failure, body: &[u8], origin: Option<Origin<'_>>) -> anyhow::Result<()> {
        let out = match &mut self.out {
            Some(out) => out,
            None => {
                if let Some(parent) = self.path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let file =
                    std::fs::File::create(&self.path).map_err(|e| anyhow::anyhow!("{}: {e}", self.path.display()))?;
                self.out.insert(std::io::BufWriter::new(file))
            }
        };
        let mut line = serde_json::json!({
            "seq": failure.seq,
            "step": failure.step,
            "reason": failure.reason,
            "late": failure.late,
            "body": String::from_utf8_lossy(body),
        });
        if let Some(origin) = origin {
            line["file"] = origin.file.display().to_string().into();
            line[origin.unit] = origin.number.into();
        }
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")?;
        self.count += 1;
        Ok(())
    }

    pub(super) fn finish(self) -> anyhow::Result<()> {
        if let Some(mut out) = self.out {
            out.flush()
                .map_err(|e| anyhow::anyhow!("{}: {e}", self.path.display()))?;
        }
        Ok(())
    }
}
