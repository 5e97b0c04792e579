#!/usr/bin/env bash
# Runs every test: unit tests, and end-to-end tests that start a real Kafka-protocol broker
# (Tansu) and the real `coalition` binary as separate processes. One build serves all tests.
# Then each fuzz target runs for a bounded time (scripts/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/prereqs.sh --test
cargo nextest run --workspace --no-fail-fast "$@"
bash scripts/fuzz.sh
