//! End-to-end scenarios live in this package's test targets (`e2e.rs`, `embedded.rs`,
//! `sparql_protocol.rs`, `deploy.rs`); the harness they share is `coalition-testkit`.
