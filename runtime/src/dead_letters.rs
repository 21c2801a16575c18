//! An in-memory dead-letter store, for runtimes built with an in-memory queue.

use std::sync::Mutex;

use async_trait::async_trait;

use crate::queue::{DeadLetter, DeadLetterStore, QueueError};

/// Dead letters kept in memory; they are lost with the process.
#[derive(Debug, Default)]
pub struct MemoryDeadLetters {
    letters: Mutex<(u64, Vec<DeadLetter>)>,
}

#[async_trait]
impl DeadLetterStore for MemoryDeadLetters {
    async fn put(&self, mut letter: DeadLetter) -> Result<u64, QueueError> {
        let mut guard = self.letters.lock().unwrap_or_else(|e| e.into_inner());
        guard.0 += 1;
        letter.id = guard.0;
        guard.1.push(letter);
        Ok(guard.0)
    }

    async fn list(&self, destination: Option<&str>) -> Result<Vec<DeadLetter>, QueueError> {
        let guard = self.letters.lock().unwrap_or_else(|e| e.into_inner());
        Ok(guard
            .1
            .iter()
            .filter(|l| destination.is_none_or(|d| l.destination == d))
            .cloned()
            .collect())
    }

    async fn remove(&self, ids: &[u64]) -> Result<(), QueueError> {
        let mut guard = self.letters.lock().unwrap_or_else(|e| e.into_inner());
        guard.1.retain(|l| !ids.contains(&l.id));
        Ok(())
    }
}
