//! The current plans and safety protocols, decoded, kept in memory (SQLite only).
//!
//! An audited read of a record would otherwise cost a trip to SQLite's worker thread and a
//! decode of the stored form. Safety data must never be stale, and it cannot be here:
//! - one process owns a SQLite file (a lock file refuses a second one, see `Store::connect`),
//!   so every write to these records goes through this process's store;
//! - a write offers its new version to the cache after it is durable and before it is
//!   answered, so a read that starts after the answer finds that version or a newer one;
//! - an entry is only ever replaced by a higher version of the same record (versions only
//!   grow), so a read that fetched an older version while a write was committing cannot put
//!   it back over the newer one; "no record" is remembered only where nothing is known yet.
//!
//! PostgreSQL has no such cache: other instances write to the same database.
//!
//! Each kind keeps at most [`CAPACITY`] records; when full, it starts afresh.

use super::records::Record;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// Entries per kind of record (a few MiB at most).
pub const CAPACITY: usize = 4096;

/// The cached records of one kind.
pub struct Shelf<T> {
    inner: Mutex<Inner<T>>,
}

struct Inner<T> {
    by_id: HashMap<(String, Uuid), Arc<Record<T>>>,
    /// The subject's record, or `None`: the subject has none (as far as anything was read).
    by_subject: HashMap<(String, String), Option<Uuid>>,
}

impl<T> Default for Shelf<T> {
    fn default() -> Self {
        Shelf {
            inner: Mutex::new(Inner {
                by_id: HashMap::new(),
                by_subject: HashMap::new(),
            }),
        }
    }
}

/// What the cache knows of a subject's record of one kind.
pub enum Known<T> {
    /// This record is current.
    Record(Arc<Record<T>>),
    /// The subject has no record of this kind.
    None,
    /// Not known: ask the database.
    Unknown,
}

impl<T> Shelf<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn by_id(&self, tenant: &str, id: Uuid) -> Option<Arc<Record<T>>> {
        self.lock().by_id.get(&(tenant.to_string(), id)).cloned()
    }

    pub fn by_subject(&self, tenant: &str, subject: &str) -> Known<T> {
        let inner = self.lock();
        match inner
            .by_subject
            .get(&(tenant.to_string(), subject.to_string()))
        {
            None => Known::Unknown,
            Some(None) => Known::None,
            Some(Some(id)) => match inner.by_id.get(&(tenant.to_string(), *id)) {
                Some(r) => Known::Record(r.clone()),
                None => Known::Unknown,
            },
        }
    }

    /// Offers a version read from or written to the database: kept unless a newer version of
    /// the record is already there.
    pub fn offer(&self, tenant: &str, record: &Record<T>)
    where
        T: Clone,
    {
        let mut inner = self.lock();
        let key = (tenant.to_string(), record.meta.id);
        if inner
            .by_id
            .get(&key)
            .is_some_and(|r| r.meta.version >= record.meta.version)
        {
            return;
        }
        if inner.by_id.len() >= CAPACITY && !inner.by_id.contains_key(&key) {
            inner.by_id.clear();
            inner.by_subject.clear();
        }
        inner.by_subject.insert(
            (tenant.to_string(), record.meta.subject.clone()),
            Some(record.meta.id),
        );
        inner.by_id.insert(key, Arc::new(record.clone()));
    }

    /// Remembers that the subject had no record of this kind when the database was read,
    /// unless something is known about the subject already.
    pub fn offer_none(&self, tenant: &str, subject: &str) {
        let mut inner = self.lock();
        if inner.by_subject.len() >= CAPACITY {
            inner.by_subject.retain(|_, v| v.is_some());
            if inner.by_subject.len() >= CAPACITY {
                return;
            }
        }
        inner
            .by_subject
            .entry((tenant.to_string(), subject.to_string()))
            .or_insert(None);
    }
}

/// One cache per SQLite database file.
#[derive(Default)]
pub struct RecordCache {
    pub plans: Shelf<crate::domain::plan::Plan>,
    pub protocols: Shelf<crate::domain::protocol::SafetyProtocol>,
}

impl std::fmt::Debug for RecordCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordCache")
    }
}
