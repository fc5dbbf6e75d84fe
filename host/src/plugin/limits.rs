//! Sandbox limits of a plugin: CPU deadline per call, memory per instance, and caps on the
//! size of what crosses the boundary.

use std::time::Duration;

use wasmtime::ResourceLimiter;

/// Limits applied to every instance and call of a plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Wall-clock budget of one `process` or `init` call (enforced with epochs, so it holds
    /// for interpreters too); past it the call traps with a timeout.
    pub call_deadline: Duration,
    /// Largest linear memory an instance may grow to, in bytes.
    pub memory_bytes: usize,
    /// Largest batch sent in one call, in bytes (approximate in-memory size); a larger
    /// batch is split, and a single event above it fails as oversize.
    pub batch_bytes: usize,
    /// Largest output of one call, in bytes; above it the call's events are retried one by
    /// one and an event whose output alone is above it fails.
    pub output_bytes: usize,
    /// Largest number of output events per input event.
    pub outputs_per_event: usize,
    /// `log` lines a call may write; the rest are counted and dropped.
    pub log_lines_per_call: u32,
    /// Keys per `lookup` call.
    pub lookup_keys_per_call: usize,
    /// Whether the plugin may read the real clocks (otherwise they read zero).
    pub grant_clock: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            call_deadline: Duration::from_secs(2),
            memory_bytes: 256 << 20,
            batch_bytes: 16 << 20,
            output_bytes: 64 << 20,
            outputs_per_event: 1024,
            log_lines_per_call: 100,
            lookup_keys_per_call: 4096,
            grant_clock: false,
        }
    }
}

/// The memory cap of one instance. It records a refusal itself, because a refused growth
/// surfaces in the guest as an allocation failure (a trap of its own making), not as a
/// wasmtime error that could be recognised afterwards.
pub(crate) struct MemoryCap {
    limit: usize,
    pub(crate) refused: Option<usize>,
}

impl MemoryCap {
    pub(crate) fn new(limits: &Limits) -> Self {
        MemoryCap {
            limit: limits.memory_bytes,
            refused: None,
        }
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.refused = Some(desired);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// Epoch ticks for a deadline, given the ticker's period (rounded up, at least one).
pub(crate) fn deadline_ticks(deadline: Duration, tick: Duration) -> u64 {
    (deadline.as_nanos().div_ceil(tick.as_nanos()) as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_within_the_cap_grows_and_above_it_is_refused_and_recorded() {
        let mut cap = MemoryCap::new(&Limits {
            memory_bytes: 1 << 20,
            ..Limits::default()
        });
        assert!(cap.memory_growing(0, 1 << 20, None).unwrap());
        assert_eq!(cap.refused, None);
        assert!(!cap.memory_growing(1 << 20, (1 << 20) + 65536, None).unwrap());
        assert_eq!(cap.refused, Some((1 << 20) + 65536));
    }

    #[test]
    fn deadlines_round_up_to_whole_ticks() {
        let tick = Duration::from_millis(10);
        assert_eq!(deadline_ticks(Duration::from_millis(1), tick), 1);
        assert_eq!(deadline_ticks(Duration::from_millis(20), tick), 2);
        assert_eq!(deadline_ticks(Duration::from_millis(21), tick), 3);
    }
}
