//! Retrying an operation on a service that is down: exponential backoff, bounded, until it
//! succeeds or shutdown is requested (then the batch is left unacknowledged: it will be
//! redelivered, so nothing is lost).

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

/// Exponential backoff between attempts on a service that is down: 50 ms doubling to 2 s.
pub(crate) struct Backoff {
    delay: Duration,
    /// Failed attempts so far.
    pub(crate) attempts: u32,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff {
            delay: Duration::from_millis(50),
            attempts: 0,
        }
    }

    /// Records a failure, logs it, and waits before the next attempt.
    pub(crate) async fn failed(&mut self, what: &str, error: &(dyn std::fmt::Display + Sync)) {
        self.attempts += 1;
        tracing::warn!("{what}: {error}; retrying in {} ms", self.delay.as_millis());
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Duration::from_secs(2));
    }
}

/// Runs `op` until it succeeds; `None` if shutdown was requested while it kept failing.
pub(crate) async fn retry<T, E, F, Fut>(what: &str, shutdown: &watch::Receiver<bool>, mut op: F) -> Option<T>
where
    E: std::fmt::Display + Sync,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = Backoff::new();
    loop {
        match op().await {
            Ok(value) => {
                if backoff.attempts > 0 {
                    tracing::info!("{what}: succeeded after {} retries", backoff.attempts);
                }
                return Some(value);
            }
            Err(_) if *shutdown.borrow() && backoff.attempts >= 3 => return None,
            Err(e) => backoff.failed(what, &e).await,
        }
    }
}
