//! Integration tests: the real application over HTTP on a random port, against a real
//! database (a fresh SQLite file per test; a fresh PostgreSQL database per test when
//! TELEMENTAL_TEST_POSTGRES_URL is set).

mod audit;
mod audit_chain;
mod audit_trail;
mod auth;
mod binary;
mod cds;
mod contract;
mod dashboard;
mod delivery_faults;
mod diagnostics;
mod encryption;
mod fhir;
mod freshness;
mod group_commit;
mod hardening;
mod healing;
mod helpers;
mod ops;
mod order;
mod outage;
mod plans;
mod readiness;
mod recommendations;
mod referrals;
mod reports;
mod retention;
mod safety;
mod stored_shapes;
mod webhook_limits;
mod webhooks;
