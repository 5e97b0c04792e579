#!/usr/bin/env bash
# Runs Coalition Graph on this machine: embedded broker, materializer, API, built-in dataset.
# Extra arguments go to `coalition serve` (e.g. --listen 0.0.0.0:8080, --kafka-brokers host:9092).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/prereqs.sh
exec cargo run --release -- serve "$@"
