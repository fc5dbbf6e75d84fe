//! What can go wrong crossing a process or disk boundary, and the one retry policy.
//!
//! Every error of a store, the bus, a file or a target says whether trying again can help
//! ([`Transient`]): a timeout, a dropped connection or a server that is loading can pass; a
//! refused request, a missing stream or unreadable data cannot. [`retry`] retries the first
//! kind with exponential backoff until the operation succeeds, shutdown is requested, or the
//! error turns out to be of the second kind, which it returns at once.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

/// Whether an error may pass by itself.
pub trait Transient {
    /// True when the same request may succeed later (the service was unreachable or busy).
    fn transient(&self) -> bool;
}

/// Something wrong with an input or a definition (an event that cannot be decoded, a value
/// that cannot be converted, a duration or time format that does not parse): trying again
/// cannot help. Its text says what was expected and what was found; for an event it is the
/// dead letter's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// An [`Invalid`] from a format string: `invalid!("expected {x}")`.
#[macro_export]
macro_rules! invalid {
    ($($t:tt)*) => {
        $crate::fault::Invalid(format!($($t)*))
    };
}

impl From<String> for Invalid {
    fn from(reason: String) -> Invalid {
        Invalid(reason)
    }
}

impl From<Invalid> for String {
    fn from(invalid: Invalid) -> String {
        invalid.0
    }
}

impl From<&str> for Invalid {
    fn from(reason: &str) -> Invalid {
        Invalid(reason.to_string())
    }
}

impl Transient for Invalid {
    fn transient(&self) -> bool {
        false
    }
}

/// A file that could not be read or written.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct FileError {
    /// The file.
    pub path: String,
    /// Why.
    pub reason: String,
    /// Whether trying again can help (a write on a full disk can; a malformed file cannot).
    pub transient: bool,
}

impl FileError {
    /// A file that cannot be read as it is (trying again cannot help).
    pub fn unreadable(path: &std::path::Path, e: impl Display) -> FileError {
        FileError {
            path: path.display().to_string(),
            reason: e.to_string(),
            transient: false,
        }
    }

    /// A write that failed (the disk may be full or the directory missing for now).
    pub fn unwritable(path: &std::path::Path, e: impl Display) -> FileError {
        FileError {
            path: path.display().to_string(),
            reason: e.to_string(),
            transient: true,
        }
    }
}

impl Transient for FileError {
    fn transient(&self) -> bool {
        self.transient
    }
}

/// Exponential backoff between attempts on a service that is down: 50 ms doubling to 2 s.
pub struct Backoff {
    delay: Duration,
    /// Failed attempts so far.
    pub attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            delay: Duration::from_millis(50),
            attempts: 0,
        }
    }
}

impl Backoff {
    /// Records a failure, logs it, and waits before the next attempt (returning early, with
    /// `false`, when shutdown is requested meanwhile).
    pub async fn failed(&mut self, what: &str, error: &(dyn Display + Sync), shutdown: &watch::Receiver<bool>) -> bool {
        self.attempts += 1;
        tracing::warn!("{what}: {error}; retrying in {} ms", self.delay.as_millis());
        let mut shutdown = shutdown.clone();
        let stopped = tokio::select! {
            _ = tokio::time::sleep(self.delay) => false,
            _ = async {
                // A dropped sender never asks for shutdown.
                if shutdown.wait_for(|stop| *stop).await.is_err() {
                    std::future::pending::<()>().await;
                }
            } => true,
        };
        self.delay = (self.delay * 2).min(Duration::from_secs(2));
        !stopped
    }

    /// [`Backoff::failed`] for code on a blocking thread (a step inside the chain): sleeps in
    /// slices so that a shutdown is seen within 50 ms.
    pub fn failed_blocking(&mut self, what: &str, error: &dyn Display, shutdown: &watch::Receiver<bool>) -> bool {
        self.attempts += 1;
        tracing::warn!("{what}: {error}; retrying in {} ms", self.delay.as_millis());
        let until = std::time::Instant::now() + self.delay;
        while std::time::Instant::now() < until {
            if *shutdown.borrow() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50).min(until - std::time::Instant::now()));
        }
        self.delay = (self.delay * 2).min(Duration::from_secs(2));
        !*shutdown.borrow()
    }
}

/// Why [`retry`] gave up.
#[derive(Debug)]
pub enum GaveUp<E> {
    /// Shutdown was requested while the operation kept failing (left undone: what it would
    /// have made durable is redelivered).
    Shutdown,
    /// The operation failed in a way trying again cannot help.
    Permanent(E),
}

/// What one attempt of [`retry`] means: its value, a reason to stop, or an error worth
/// another attempt.
enum Attempt<T, E> {
    Done(T),
    Stop(GaveUp<E>),
    Again(E),
}

impl<T, E: Display + Transient> Attempt<T, E> {
    fn judge(what: &str, result: Result<T, E>, backoff: &Backoff, shutdown: &watch::Receiver<bool>) -> Self {
        match result {
            Ok(value) => {
                if backoff.attempts > 0 {
                    tracing::info!("{what}: succeeded after {} retries", backoff.attempts);
                }
                Attempt::Done(value)
            }
            Err(e) if !e.transient() => {
                tracing::error!("{what}: {e}; trying again cannot help");
                Attempt::Stop(GaveUp::Permanent(e))
            }
            Err(_) if *shutdown.borrow() && backoff.attempts >= 3 => Attempt::Stop(GaveUp::Shutdown),
            Err(e) => Attempt::Again(e),
        }
    }
}

/// Runs `op` until it succeeds, retrying transient errors with [`Backoff`]; gives up on a
/// permanent error, or on shutdown once it failed three times (a service that is merely slow
/// to answer gets a chance to take the last batch).
pub async fn retry<T, E, F, Fut>(what: &str, shutdown: &watch::Receiver<bool>, mut op: F) -> Result<T, GaveUp<E>>
where
    E: Display + Transient + Sync,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = Backoff::default();
    loop {
        match Attempt::judge(what, op().await, &backoff, shutdown) {
            Attempt::Done(value) => return Ok(value),
            Attempt::Stop(gave_up) => return Err(gave_up),
            Attempt::Again(e) => {
                backoff.failed(what, &e, shutdown).await;
            }
        }
    }
}

/// [`retry`] on a blocking thread.
pub fn retry_blocking<T, E, F>(what: &str, shutdown: &watch::Receiver<bool>, mut op: F) -> Result<T, GaveUp<E>>
where
    E: Display + Transient,
    F: FnMut() -> Result<T, E>,
{
    let mut backoff = Backoff::default();
    loop {
        match Attempt::judge(what, op(), &backoff, shutdown) {
            Attempt::Done(value) => return Ok(value),
            Attempt::Stop(gave_up) => return Err(gave_up),
            Attempt::Again(e) => {
                backoff.failed_blocking(what, &e, shutdown);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Failure(bool);
    impl Display for Failure {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "failure (transient: {})", self.0)
        }
    }
    impl Transient for Failure {
        fn transient(&self) -> bool {
            self.0
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_permanent_ones_returned_at_once() {
        let (_tx, rx) = watch::channel(false);
        let mut calls = 0;
        let got = retry("op", &rx, || {
            calls += 1;
            let n = calls;
            async move {
                if n < 4 {
                    Err(Failure(true))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert!(matches!(got, Ok(4)));
        let mut calls = 0;
        let got: Result<(), _> = retry("op", &rx, || {
            calls += 1;
            async { Err(Failure(false)) }
        })
        .await;
        assert!(matches!(got, Err(GaveUp::Permanent(Failure(false)))));
        assert_eq!(calls, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_the_retries() {
        let (tx, rx) = watch::channel(false);
        tx.send(true).unwrap();
        let got: Result<(), _> = retry("op", &rx, || async { Err(Failure(true)) }).await;
        assert!(matches!(got, Err(GaveUp::Shutdown)));
        let got: Result<(), _> = retry_blocking("op", &rx, || Err(Failure(true)));
        assert!(matches!(got, Err(GaveUp::Shutdown)));
    }
}
