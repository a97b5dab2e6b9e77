//! Admission control: at most `max_concurrent` invocations run, at most `max_queue` wait for a
//! slot, and everything beyond that is turned away at once (429) instead of piling up.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why admission failed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// The queue is full.
    QueueFull,
    /// No slot freed up within the wait budget.
    TimedOut,
}

/// Concurrency slots plus a bounded waiting room.
#[derive(Debug)]
pub(super) struct Gate {
    slots: Arc<Semaphore>,
    max_queue: usize,
    queued: AtomicUsize,
}

/// A running slot; dropping it frees the slot.
pub(super) type Slot = OwnedSemaphorePermit;

impl Gate {
    /// `max_concurrent` slots (at least 1) and room for `max_queue` waiters.
    pub(super) fn new(max_concurrent: usize, max_queue: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_concurrent.max(1))),
            max_queue,
            queued: AtomicUsize::new(0),
        }
    }

    /// Requests waiting for a slot now.
    pub(super) fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Slots in use now.
    pub(super) fn in_flight(&self, max_concurrent: usize) -> usize {
        max_concurrent.max(1) - self.slots.available_permits()
    }

    /// A slot now, or after waiting in the queue for at most `wait`.
    pub(super) async fn admit(&self, wait: Duration) -> Result<Slot, Refused> {
        if let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(slot);
        }
        // Reserve a place in the queue, or refuse when it is full.
        let mut n = self.queued.load(Ordering::Relaxed);
        loop {
            if n >= self.max_queue {
                return Err(Refused::QueueFull);
            }
            match self
                .queued
                .compare_exchange(n, n + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => n = now,
            }
        }
        let result = tokio::time::timeout(wait, Arc::clone(&self.slots).acquire_owned()).await;
        self.queued.fetch_sub(1, Ordering::AcqRel);
        match result {
            Ok(Ok(slot)) => Ok(slot),
            _ => Err(Refused::TimedOut),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queue_overflow_is_refused_and_slots_are_reused() {
        let gate = Arc::new(Gate::new(1, 1));
        let held = gate.admit(Duration::from_secs(1)).await.unwrap();
        let g2 = Arc::clone(&gate);
        let waiter = tokio::spawn(async move { g2.admit(Duration::from_secs(5)).await });
        while gate.queued() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            gate.admit(Duration::from_secs(1)).await.unwrap_err(),
            Refused::QueueFull
        );
        drop(held);
        let slot = waiter.await.unwrap().unwrap();
        assert_eq!(gate.queued(), 0);
        assert_eq!(gate.in_flight(1), 1);
        drop(slot);
        assert_eq!(gate.in_flight(1), 0);
    }

    #[tokio::test]
    async fn waiting_is_bounded() {
        let gate = Gate::new(1, 4);
        let _held = gate.admit(Duration::from_secs(1)).await.unwrap();
        assert_eq!(
            gate.admit(Duration::from_millis(20)).await.unwrap_err(),
            Refused::TimedOut
        );
        assert_eq!(gate.queued(), 0);
    }
}
