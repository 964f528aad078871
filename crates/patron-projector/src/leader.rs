//! Leadership among instances on one database — projectors, and relays of one name: the
//! instance holding the lease is the active one, the others are hot standbys that try to take
//! the lease over.
//!
//! The lease is renewed by a task of its own, so a long page or a long load never lets it lapse.
//! Leadership only keeps standbys from working in vain: correctness rests on the checkpoint fence
//! of every commit, which refuses a writer that lost the lease without noticing yet.

use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::port::Lease;

/// A held lease, renewed in the background until it is lost or released.
pub(crate) struct Leadership {
    held: watch::Receiver<bool>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Leadership {
    /// Renews `lease` every quarter of `ttl`, each renewal given half of `ttl`: a lease is
    /// declared lost (and never used again) at most three quarters of `ttl` after its last
    /// successful renewal, before it can expire and be taken over.
    pub(crate) fn hold(lease: Box<dyn Lease>, ttl: Duration) -> Self {
        let every = (ttl / 4).max(Duration::from_millis(10));
        let patience = (ttl / 2).max(Duration::from_millis(10));
        let (report, held) = watch::channel(true);
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut lease = lease;
            loop {
                tokio::select! {
                    asked = &mut stopped => {
                        // Asked to let go; without asking (the holder was dropped), the lease
                        // just lapses, as if the process had died.
                        if asked.is_ok() && let Err(error) = lease.release().await {
                            tracing::warn!(%error, "cannot release the lease; it lapses by itself");
                        }
                        return;
                    }
                    () = tokio::time::sleep(every) => {}
                }
                let lost = match tokio::time::timeout(patience, lease.renew()).await {
                    Ok(Ok(true)) => continue,
                    Ok(Ok(false)) => "another instance took the lease over".to_owned(),
                    Ok(Err(error)) => format!("cannot renew the lease: {error}"),
                    Err(_) => format!("renewing the lease took over {patience:?}"),
                };
                tracing::warn!(reason = %lost, "leadership lost");
                let _ = report.send(false);
                // Dropping it closes what it holds (PostgreSQL: the session, and so the lock).
                drop(lease);
                return;
            }
        });
        Self {
            held,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Whether the lease is still held (as of its last renewal).
    pub(crate) fn is_held(&self) -> bool {
        *self.held.borrow()
    }

    /// Completes when the lease is lost.
    pub(crate) async fn lost(&mut self) {
        // An error means the renewing task is gone: the lease is not held either way.
        let _ = self.held.wait_for(|held| !*held).await;
    }

    /// Gives the lease up (when still held) so that a standby can take over at once.
    pub(crate) async fn release(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        // Not released (e.g. the runner was cancelled): stop renewing; the lease lapses.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::ReadModelError;

    /// A lease that renews `good` times, then reports it was taken over; counts releases.
    struct Scripted {
        good: usize,
        renewals: Arc<AtomicUsize>,
        released: Arc<AtomicUsize>,
    }

    #[async_trait]
    impl Lease for Scripted {
        async fn renew(&mut self) -> Result<bool, ReadModelError> {
            let n = self.renewals.fetch_add(1, Ordering::SeqCst);
            Ok(n < self.good)
        }

        async fn release(self: Box<Self>) -> Result<(), ReadModelError> {
            self.released.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn scripted(good: usize) -> (Box<dyn Lease>, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let (renewals, released) = (Arc::default(), Arc::default());
        let lease = Scripted {
            good,
            renewals: Arc::clone(&renewals),
            released: Arc::clone(&released),
        };
        (Box::new(lease), renewals, released)
    }

    #[tokio::test]
    async fn a_lease_taken_over_is_reported_lost_and_not_renewed_again() {
        let (lease, renewals, released) = scripted(3);
        let mut leadership = Leadership::hold(lease, Duration::from_millis(400));
        assert!(leadership.is_held(), "held from the start");
        leadership.lost().await;
        assert!(!leadership.is_held(), "lost after the failed renewal");
        assert_eq!(
            renewals.load(Ordering::SeqCst),
            4,
            "three good renewals, one failed"
        );
        // Ten renewal periods later: none more.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(renewals.load(Ordering::SeqCst), 4, "no renewal once lost");
        leadership.release().await;
        assert_eq!(
            released.load(Ordering::SeqCst),
            0,
            "a lost lease is not released"
        );
    }

    #[tokio::test]
    async fn a_held_lease_is_renewed_before_it_expires_and_released_on_request() {
        let (lease, renewals, released) = scripted(usize::MAX);
        let leadership = Leadership::hold(lease, Duration::from_millis(400));
        tokio::time::sleep(Duration::from_millis(1_050)).await;
        // Every 100 ms (a quarter of 400 ms): ten times in a second, fewer if the machine lags.
        let renewed = renewals.load(Ordering::SeqCst);
        assert!(
            (5..=10).contains(&renewed),
            "renewed {renewed} times in 1 s"
        );
        assert!(leadership.is_held(), "still held");
        leadership.release().await;
        assert_eq!(released.load(Ordering::SeqCst), 1, "released once");
    }

    /// A lease whose renewal hangs.
    struct Hanging;

    #[async_trait]
    impl Lease for Hanging {
        async fn renew(&mut self) -> Result<bool, ReadModelError> {
            std::future::pending().await
        }

        async fn release(self: Box<Self>) -> Result<(), ReadModelError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_hanging_renewal_loses_the_lease_before_it_can_expire() {
        let ttl = Duration::from_secs(2);
        let started = tokio::time::Instant::now();
        let mut leadership = Leadership::hold(Box::new(Hanging), ttl);
        leadership.lost().await;
        // Given up after a quarter of the TTL (the renewal) plus half of it (its patience).
        assert!(
            started.elapsed() < ttl,
            "lost after {:?}, before the {ttl:?} expiry",
            started.elapsed()
        );
    }
}
