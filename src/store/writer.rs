//! Group commit for what reads must write before they are answered: the audit rows of every
//! read and denial, a CDS call's token id (refusing a replay), a recommendation's counts for
//! the equity report. Done one transaction per request, requests queue on the database's
//! commit (on SQLite, on its single writer lock, whose busy handler sleeps, then on a flush
//! each). Here one task writes whatever requests are waiting in one transaction, with one
//! multi-row statement per table, flushes once (`Store::durable`), and answers each. Audit rows
//! are linked into their tenants' hash chains as they are written (see migration 0060), so the
//! background sealer only has the rows of record changes left to link.

use super::{audit, on_db, AuditEntry, DbError, Store, Ts};
use crate::domain::report::RecommendationTally;
use std::collections::{BTreeMap, HashSet};
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
    /// A recommendation to count for the equity report: (tenant, what it adds).
    tally: Option<(String, RecommendationTally)>,
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
        if token.is_none() && audit.is_empty() {
            return Ok(true);
        }
        self.send(token, audit, None).await
    }

    /// Records a recommendation's audit entries and counts it for the equity report.
    pub async fn record_recommendation(
        &self,
        audit: Vec<AuditEntry>,
        tenant: &str,
        tally: RecommendationTally,
    ) -> Result<(), DbError> {
        self.send(None, audit, Some((tenant.to_string(), tally)))
            .await
            .map(|_| ())
    }

    async fn send(
        &self,
        token: Option<SeenToken>,
        audit: Vec<AuditEntry>,
        tally: Option<(String, RecommendationTally)>,
    ) -> Result<bool, DbError> {
        let (done, answer) = oneshot::channel();
        self.jobs
            .send(Job {
                token,
                audit,
                tally,
                done,
            })
            .await
            .map_err(|_| DbError::Unavailable("the audit writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| DbError::Unavailable("the audit writer has stopped".into()))?
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
            // Committed: the batch is answered once its commit is on disk. That wait runs
            // apart, so the next batch is written while this one's flush is under way (a
            // flush covers every commit made before it began, so each batch still waits
            // for a flush that started after its own commit).
            Ok(fresh) => {
                let store = store.clone();
                tokio::spawn(async move {
                    let flushed = store.durable().await.map_err(|e| e.to_string());
                    for (job, f) in batch.into_iter().zip(fresh) {
                        let _ = job.done.send(flushed.clone().map(|()| f));
                    }
                });
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

/// Rows per multi-row INSERT (well under both engines' limits on bound parameters). These
/// statements are not kept prepared (`persistent(false)`): one text per row count, cached on
/// every pooled connection, held tens of MiB for a saving of a few microseconds a batch.
const ROWS_PER_INSERT: usize = 100;

/// One transaction for the batch, with one statement per table and chunk rather than per row
/// (on SQLite every statement is a hand-off to its worker thread), committed but not yet
/// known to be durable; per job, whether its token was fresh. A token twice in one batch is
/// fresh only the first time.
async fn write(store: &Store, batch: &[Job]) -> Result<Vec<bool>, DbError> {
    let mut seen = HashSet::new();
    let first: Vec<bool> = batch
        .iter()
        .map(|j| {
            j.token
                .as_ref()
                .is_none_or(|t| seen.insert((t.issuer.as_str(), t.jti.as_str())))
        })
        .collect();
    let tokens: Vec<&SeenToken> = batch
        .iter()
        .zip(&first)
        .filter_map(|(j, f)| j.token.as_ref().filter(|_| *f))
        .collect();
    let now = Ts::now();
    // The batch's recommendations, summed per counter row (a random shard per batch, so that
    // instances on one PostgreSQL rarely update the same row at once).
    let mut sums: BTreeMap<(&str, chrono::NaiveDate, &str, &str, &str), i64> = BTreeMap::new();
    for (tenant, t) in batch.iter().filter_map(|j| j.tally.as_ref()) {
        *sums
            .entry((
                tenant.as_str(),
                t.day,
                t.modality,
                t.exclusion_level,
                t.first_preference,
            ))
            .or_default() += 1;
    }
    let tallies: Vec<_> = sums.into_iter().collect();
    let shard: i32 = rand::random_range(0..16);
    let fresh_keys: HashSet<(String, String)> = on_db!(&store.db, p => {
        let _turn = store.write_turn().await;
        let mut tx = p.begin().await?;
        let mut fresh_keys = HashSet::new();
        for chunk in tokens.chunks(ROWS_PER_INSERT) {
            let sql = store.numbered(seen_tokens_sql(chunk.len()));
            let mut q = sqlx::query_as::<_, (String, String)>(&sql).persistent(false);
            for t in chunk {
                q = q.bind(&t.issuer).bind(&t.jti).bind(t.keep_until);
            }
            fresh_keys.extend(q.bind(now).fetch_all(&mut *tx).await?);
        }
        let entries: Vec<&AuditEntry> = batch
            .iter()
            .zip(&first)
            .filter(|(j, f)| {
                **f && j.token.as_ref().is_none_or(|t| {
                    fresh_keys.contains(&(t.issuer.clone(), t.jti.clone()))
                })
            })
            .flat_map(|(j, _)| &j.audit)
            .collect();
        // Each tenant's entries are linked into its hash chain here and inserted sealed: one
        // write per row, where rows inserted unsealed are written again by the sealer.
        let mut by_tenant: BTreeMap<&str, Vec<&AuditEntry>> = BTreeMap::new();
        for e in entries {
            by_tenant.entry(e.tenant.as_str()).or_default().push(e);
        }
        for (tenant, entries) in by_tenant {
            sqlx::query(audit::ENSURE_HEAD).bind(tenant).execute(&mut *tx).await?;
            let head: (i64, String) = sqlx::query_as(store.chain_head_sql())
                .bind(tenant).fetch_one(&mut *tx).await?;
            // Each sealed insert moves the head with it (migration 0060).
            let rows = audit::link(head, &entries);
            for chunk in rows.chunks(ROWS_PER_INSERT) {
                let sql = store.numbered(audit_sql(chunk.len()));
                let mut q = sqlx::query(&sql).persistent(false);
                for r in chunk {
                    let e = r.entry;
                    q = q
                        .bind(r.id)
                        .bind(&e.tenant)
                        .bind(r.at)
                        .bind(&e.actor)
                        .bind(e.action)
                        .bind(e.resource_type)
                        .bind(e.resource_id)
                        .bind(&e.subject)
                        .bind(&e.request_id)
                        .bind(e.outcome)
                        .bind(r.seq)
                        .bind(&r.prev_hash)
                        .bind(&r.hash);
                }
                q.execute(&mut *tx).await?;
            }
        }
        for chunk in tallies.chunks(ROWS_PER_INSERT / 2) {
            let sql = store.numbered(tally_sql(chunk.len()));
            let mut q = sqlx::query(&sql).persistent(false);
            for ((tenant, day, modality, level, first), n) in chunk {
                q = q
                    .bind(tenant)
                    .bind(day)
                    .bind(*modality)
                    .bind(*level)
                    .bind(*first)
                    .bind(shard)
                    .bind(*n);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        fresh_keys
    });
    Ok(batch
        .iter()
        .zip(first)
        .map(|(j, f)| {
            f && j
                .token
                .as_ref()
                .is_none_or(|t| fresh_keys.contains(&(t.issuer.clone(), t.jti.clone())))
        })
        .collect())
}

/// `$1, $2, …` groups of `width` for `rows` rows, starting at `$1`.
pub(super) fn placeholders(rows: usize, width: usize) -> String {
    (0..rows)
        .map(|r| {
            let cols: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
            format!("({})", cols.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Records token ids; returns those recorded now (new, or taking over an expired row). The
/// last parameter is the current time.
fn seen_tokens_sql(rows: usize) -> String {
    format!(
        "INSERT INTO cds_seen_tokens (issuer, jti, expires_at) VALUES {} \
         ON CONFLICT (issuer, jti) DO UPDATE SET expires_at = excluded.expires_at \
         WHERE cds_seen_tokens.expires_at < ${} RETURNING issuer, jti",
        placeholders(rows, 3),
        rows * 3 + 1
    )
}

/// The columns of `store::audit::INSERT_AUDIT` and the chain fields, for many rows at once.
fn audit_sql(rows: usize) -> String {
    format!(
        "INSERT INTO audit_events (id, tenant, at, actor, action, resource_type, resource_id, \
         subject, request_id, outcome, seq, prev_hash, hash) VALUES {}",
        placeholders(rows, 13)
    )
}

/// Adds counts to the equity report's recommendation counters.
fn tally_sql(rows: usize) -> String {
    format!(
        "INSERT INTO recommendation_counts \
         (tenant, day, modality, exclusion_level, first_preference, shard, n) VALUES {} \
         ON CONFLICT (tenant, day, modality, exclusion_level, first_preference, shard) \
         DO UPDATE SET n = recommendation_counts.n + excluded.n",
        placeholders(rows, 7)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_row_statements_number_their_parameters_in_order() {
        assert_eq!(placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert!(seen_tokens_sql(2).contains("($4, $5, $6) ON CONFLICT"));
        assert!(seen_tokens_sql(2).contains("expires_at < $7 RETURNING"));
        assert!(audit_sql(1).ends_with("($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"));
    }
}
