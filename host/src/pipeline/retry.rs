//! Retrying an operation on a service that is down: exponential backoff, bounded, until it
//! succeeds or shutdown is requested (then the batch is left unacknowledged: it will be
//! redelivered, so nothing is lost).

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

use crate::targets::TargetError;

/// Runs `op` until it succeeds; `None` if shutdown was requested while it kept failing.
pub(crate) async fn retry<T, F, Fut>(what: &str, shutdown: &watch::Receiver<bool>, mut op: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, TargetError>>,
{
    let mut delay = Duration::from_millis(50);
    let mut attempt = 0u32;
    loop {
        match op().await {
            Ok(value) => {
                if attempt > 0 {
                    tracing::info!("{what}: succeeded after {attempt} retries");
                }
                return Some(value);
            }
            Err(e) => {
                attempt += 1;
                tracing::warn!("{what}: {e}; retrying in {} ms", delay.as_millis());
                if *shutdown.borrow() && attempt > 3 {
                    return None;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}
