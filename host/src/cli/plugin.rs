//! `sluice plugin check` and `sluice plugin run`: try a plugin without any server.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use serde_json::{Map, Value as Json};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::config::TimeFormat;
use crate::event::{event_to_json, values_from_json, Batch, Event, Value};
use crate::plugin::{Limits, NoLookup, PluginEngine, Registry};
use crate::sources::decode::{json_kind, parse_time};

/// Options of `sluice plugin run`.
#[derive(Debug, clap::Args)]
pub struct RunOptions {
    /// Plugin configuration, KEY=VALUE (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE")]
    pub config: Vec<String>,
    /// Field holding the entity key.
    #[arg(long, default_value = "key")]
    pub key: String,
    /// Field holding the event time (RFC 3339 text, or epoch milliseconds).
    #[arg(long, default_value = "ts")]
    pub time: String,
    /// Events per call.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Also write each output event's key and time as `_key` and `_time` (RFC 3339).
    #[arg(long)]
    pub meta: bool,
    /// Let the plugin read the real clocks (otherwise they read zero).
    #[arg(long)]
    pub grant_clock: bool,
}

fn read(file: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))
}

fn engine(cache_dir: Option<PathBuf>) -> anyhow::Result<Arc<PluginEngine>> {
    Ok(PluginEngine::new(Some(
        cache_dir.unwrap_or_else(super::default_cache_dir),
    ))?)
}

/// Prints what a component is, or a one-line reason it is not a plugin this host runs.
pub fn check(file: &Path, cache_dir: Option<PathBuf>) -> anyhow::Result<i32> {
    let bytes = read(file)?;
    let engine = engine(cache_dir)?;
    let compiled = match engine.compile(&bytes) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            return Ok(1);
        }
    };
    if let Err(e) = engine.instance_pre(&compiled.component) {
        eprintln!("{}: {e}", file.display());
        return Ok(1);
    }
    println!(
        "{}: ok, a Sluice plugin for sluice:plugin@{}",
        file.display(),
        compiled.contract.version
    );
    println!("  version  {} (sha256 {})", &compiled.hash[..12], compiled.hash);
    println!("  size     {} bytes", compiled.size);
    let how = if compiled.cached {
        "loaded from cache"
    } else {
        "compiled"
    };
    println!("  {how} in {:.1} ms", compiled.load_time.as_secs_f64() * 1e3);
    println!("  exports  {}", compiled.contract.exports.join(", "));
    println!("  imports  {}", compiled.contract.imports.join(", "));
    Ok(0)
}

fn parse_config(pairs: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    pairs
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("--config {p:?}: expected KEY=VALUE"))
        })
        .collect()
}

/// Event time in microseconds (RFC 3339 text or epoch milliseconds, as a feature set's `auto`
/// format reads it); 0 when the field is absent, so a plugin can be tried without times.
fn time_of(json: Option<&Json>, field: &str) -> Result<i64, String> {
    Ok(parse_time(json, field, TimeFormat::EpochMs)?.unwrap_or(0))
}

fn key_of(json: Option<&Json>) -> String {
    match json {
        None | Some(Json::Null) => String::new(),
        Some(Json::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Runs a plugin over JSONL input, its output events on `output` and a `line N: reason` line
/// per failed input line on `errors`, in line order; returns 0 if every event succeeded, 1
/// otherwise.
pub fn run(
    file: &Path,
    cache_dir: Option<PathBuf>,
    options: RunOptions,
    input: impl BufRead,
    output: &mut impl Write,
    errors: &mut impl Write,
) -> anyhow::Result<i32> {
    let bytes = read(file)?;
    let config = parse_config(&options.config)?;
    let registry = Registry::new(engine(cache_dir)?, 2);
    registry
        .deploy("cli", &bytes, None)
        .with_context(|| file.display().to_string())?;
    let limits = Limits {
        grant_clock: options.grant_clock,
        ..Limits::default()
    };
    let handle = registry.handle("cli", config, limits, Arc::new(NoLookup))?;
    let mut runner = Runner {
        handle,
        options,
        pending: Vec::new(),
        failed: 0,
    };
    for (i, line) in input.lines().enumerate() {
        let line = line.context("reading stdin")?;
        if !line.trim().is_empty() {
            runner.push(i + 1, &line, output, errors)?;
        }
    }
    runner.flush(output, errors)?;
    output.flush()?;
    errors.flush()?;
    Ok(if runner.failed == 0 { 0 } else { 1 })
}

/// One input line: a JSON object, or why it is not one.
type Parsed = Result<Map<String, Json>, String>;

/// Gathers input lines into batches, runs them, writes outputs and reports errors in line
/// order.
struct Runner {
    handle: crate::plugin::PluginHandle,
    options: RunOptions,
    pending: Vec<(usize, Parsed)>,
    failed: usize,
}

impl Runner {
    fn push(&mut self, line: usize, text: &str, out: &mut impl Write, errs: &mut impl Write) -> anyhow::Result<()> {
        let object = match serde_json::from_str::<Json>(text) {
            Ok(Json::Object(object)) => Ok(object),
            Ok(other) => Err(format!("expected a JSON object, found {}", json_kind(&other))),
            Err(e) => Err(format!("invalid JSON: {e}")),
        };
        self.pending.push((line, object));
        if self.pending.len() >= self.options.batch.max(1) {
            self.flush(out, errs)?;
        }
        Ok(())
    }

    fn flush(&mut self, out: &mut impl Write, errs: &mut impl Write) -> anyhow::Result<()> {
        let (mut fields, mut events, mut lines, mut errors) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (line, object) in std::mem::take(&mut self.pending) {
            let timed = object.and_then(|o| Ok((time_of(o.get(&self.options.time), &self.options.time)?, o)));
            match timed {
                Ok((time, object)) => {
                    let key = key_of(object.get(&self.options.key));
                    events.push(Event {
                        key,
                        time,
                        values: values_from_json(object, &mut fields),
                    });
                    lines.push(line);
                }
                Err(e) => errors.push((line, e)),
            }
        }
        if !events.is_empty() {
            let result = self.handle.process(&Batch { fields, events });
            for (line, outcome) in lines.into_iter().zip(result.outcomes) {
                match outcome {
                    Ok(events) => self.write(out, &result.fields, &events)?,
                    Err(failure) => errors.push((line, failure.reason)),
                }
            }
        }
        errors.sort_by_key(|(line, _)| *line);
        for (line, error) in &errors {
            writeln!(errs, "line {line}: {error}")?;
        }
        self.failed += errors.len();
        Ok(())
    }

    fn write(&self, out: &mut impl Write, fields: &[String], events: &[Event]) -> anyhow::Result<()> {
        for event in events {
            let mut object = event_to_json(fields, event);
            if self.options.meta {
                object.insert("_key".into(), Json::String(event.key.clone()));
                object.insert("_time".into(), crate::event::value_to_json(&time_value(event.time)));
            }
            serde_json::to_writer(&mut *out, &object)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    }
}

fn time_value(us: i64) -> Value {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000);
    match t.ok().and_then(|t| t.format(&Rfc3339).ok()) {
        Some(text) => Value::Text(text),
        None => Value::Integer(us),
    }
}

/// `sluice plugin deploy`: `PUT /v1/plugins/<name>` on a running server (plain HTTP); prints
/// the server's answer; exit 1 unless it is a success.
pub fn deploy(name: &str, file: &Path, server: &str, token: &str) -> anyhow::Result<i32> {
    use std::io::{Read, Write};
    let bytes = std::fs::read(file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let address = server
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("{server:?}: expected http://host:port"))?
        .trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(address).map_err(|e| anyhow::anyhow!("{server}: {e}"))?;
    let head = format!(
        "PUT /v1/plugins/{name} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/wasm\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        bytes.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(&bytes)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let status: u16 = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    if (200..300).contains(&status) {
        println!("{body}");
        Ok(0)
    } else {
        eprintln!("deploy refused ({status}): {body}");
        Ok(1)
    }
}
