-- Bounded growth. The worker prunes finished deliveries (with their attempts) and then events
-- no delivery needs, in small batches, after TELEMENTAL_OUTBOX_RETENTION. These indexes keep
-- each batch a short range scan instead of a walk over the whole history.
CREATE INDEX webhook_deliveries_by_status_delivered ON webhook_deliveries (status, delivered_at);
-- Dead and cancelled deliveries are taken by next_attempt_at (the time of death for a dead
-- letter); `webhook_deliveries_due (status, next_attempt_at)` already serves them.
-- "Does any delivery still need this event?"
CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries (event_id);
CREATE INDEX outbox_events_by_time ON outbox_events (occurred_at);

-- The `plan.review_due` sweeper reads only plans that can still fire: those whose current
-- review date has not been notified. Once notified, a plan leaves the index (until its next
-- review date), so the scanned range does not grow as plans pass their review dates. The sweep
-- query repeats this condition word for word so that both engines can use the index.
CREATE INDEX plans_review_unnotified ON plans (review_due)
    WHERE (review_notified_for IS NULL OR review_notified_for <> review_due);
