//! Integration tests: the real application over HTTP on a random port, against a real
//! database (a fresh SQLite file per test; a fresh PostgreSQL database per test when
//! TELEMENTAL_TEST_POSTGRES_URL is set).

mod audit;
mod auth;
mod binary;
mod delivery_faults;
mod diagnostics;
mod healing;
mod helpers;
mod ops;
mod outage;
mod plans;
mod recommendations;
mod referrals;
mod retention;
mod safety;
mod webhooks;
