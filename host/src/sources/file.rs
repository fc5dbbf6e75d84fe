//! The file source: JSON lines read once, each line's number standing for its sequence.

use std::io::BufRead;
use std::path::Path;

use bytes::Bytes;

/// Reads a JSONL file as (line number, bytes) pairs, blank lines skipped.
pub fn read_jsonl(path: &Path) -> std::io::Result<Vec<(u64, Bytes)>> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut out = Vec::new();
    for (i, line) in file.lines().enumerate() {
        let line = line?;
        if !line.trim().is_empty() {
            out.push((i as u64 + 1, Bytes::from(line)));
        }
    }
    Ok(out)
}
