//! Group commit for the EHR-facing hot paths. A CDS call must record its token's `jti`
//! (refusing a replay) and its audit entries before it answers, a FHIR read its audit entry;
//! done one transaction per request, requests queue on the database's commit (on SQLite, on
//! its single writer lock, whose busy handler sleeps). Here one task writes whatever requests
//! are waiting in one transaction and answers each once it is committed.

use crate::store::audit::insert_audit;
use crate::store::{on_db, AuditEntry, DbError, Store, Ts};
use tokio::sync::{mpsc, oneshot};

/// Most calls written in one transaction.
const MAX_BATCH: usize = 256;

/// A token id to record: `(issuer, jti)` until `keep_until`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SeenToken {
    pub issuer: String,
    pub jti: String,
    pub keep_until: Ts,
}

struct Job {
    token: Option<SeenToken>,
    audit: Vec<AuditEntry>,
    done: oneshot::Sender<Result<bool, String>>,
}

/// Hands writes to the group-commit task.
#[derive(Clone, Debug)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

impl Writer {
    /// Starts the task on the current runtime; it ends when every `Writer` is dropped.
    pub fn start(store: Store) -> Writer {
        let (jobs, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(store, rx));
        Writer { jobs }
    }

    /// Records the token (when given) and, unless it is a replay, the audit entries, both
    /// committed before this returns. `Ok(false)`: the token was already used.
    pub async fn record(
        &self,
        token: Option<SeenToken>,
        audit: Vec<AuditEntry>,
    ) -> Result<bool, DbError> {
        let (done, answer) = oneshot::channel();
        self.jobs
            .send(Job { token, audit, done })
            .await
            .map_err(|_| DbError::Unavailable("the CDS writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| DbError::Unavailable("the CDS writer has stopped".into()))?
            .map_err(DbError::Unavailable)
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // The same order in every instance, so concurrent batches on PostgreSQL lock token
        // rows in one order and cannot deadlock each other.
        batch.sort_by(|a, b| a.token.cmp(&b.token));
        match write(&store, &batch).await {
            Ok(fresh) => {
                for (job, f) in batch.into_iter().zip(fresh) {
                    let _ = job.done.send(Ok(f));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                tracing::warn!(error = %msg, calls = batch.len(), "CDS batch write failed");
                for job in batch {
                    let _ = job.done.send(Err(msg.clone()));
                }
            }
        }
    }
}

/// One transaction for the batch; per job, whether its token was fresh.
async fn write(store: &Store, batch: &[Job]) -> Result<Vec<bool>, DbError> {
    const SEEN: &str = "INSERT INTO cds_seen_tokens (issuer, jti, expires_at) VALUES ($1, $2, $3) \
        ON CONFLICT (issuer, jti) DO UPDATE SET expires_at = excluded.expires_at \
        WHERE cds_seen_tokens.expires_at < $4";
    let now = Ts::now();
    let fresh = on_db!(&store.db, p => {
        let mut tx = p.begin().await?;
        let mut fresh = Vec::with_capacity(batch.len());
        for job in batch {
            let ok = match &job.token {
                None => true,
                Some(t) => sqlx::query(SEEN)
                    .bind(&t.issuer).bind(&t.jti).bind(t.keep_until).bind(now)
                    .execute(&mut *tx).await?.rows_affected() == 1,
            };
            if ok {
                for e in &job.audit {
                    insert_audit!(&mut *tx, e)?;
                }
            }
            fresh.push(ok);
        }
        tx.commit().await?;
        fresh
    });
    Ok(fresh)
}
