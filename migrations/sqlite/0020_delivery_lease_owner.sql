-- Delivery leases name their holder. A worker instance (one per process, a fresh id at every
-- start) leases a delivery for a short time and renews the lease while its POST is in flight;
-- a killed process stops renewing, so another or a restarted instance takes the delivery over
-- within one lease (seconds) instead of waiting out the webhook timeout. Renewals and results
-- only touch rows the instance still holds.
ALTER TABLE webhook_deliveries ADD COLUMN locked_by BLOB;
