#!/usr/bin/env bash
# Create the Coalition Graph Kafka topics defined in topics.yaml, and bring the
# configs of existing ones back in line with it. Safe to run any number of times.
#
# Runs wherever the Kafka CLI tools are: the apache/kafka image (compose `topics`
# service, Kubernetes Job) or a host with a Kafka distribution. Needs bash and
# awk only (no python: the apache/kafka image has none).
#
# Environment:
#   BOOTSTRAP            bootstrap servers, host:port[,host:port...] (default localhost:9092)
#   REPLICATION          replication factor for every topic (default 1, for one broker;
#                        use 3 in production). It overrides replicationFactor in topics.yaml.
#   MIN_INSYNC_REPLICAS  force min.insync.replicas. By default the topics.yaml value,
#                        lowered to REPLICATION-1 (at least 1) so acks=all writes still
#                        succeed on small clusters.
#   TOPICS_FILE          topic definitions (default: topics.yaml next to this script)
#   KAFKA_BIN            folder holding kafka-topics.sh / kafka-configs.sh (default: $PATH,
#                        then /opt/kafka/bin)
#   COMMAND_CONFIG       optional client .properties file (TLS/SASL settings) passed to
#                        every tool as --command-config
#   RECONCILE            1 (default): run kafka-configs --alter on topics that already
#                        exist, so they get the topics.yaml configs; 0: leave them as they are
#   WAIT_SECONDS         how long to wait for the brokers to answer (default 120)
#   DRY_RUN              1: print the commands and touch nothing (acts as if no topic
#                        exists). Does not need Kafka tools or a broker.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOPICS_FILE=${TOPICS_FILE:-$SCRIPT_DIR/topics.yaml}
BOOTSTRAP=${BOOTSTRAP:-localhost:9092}
REPLICATION=${REPLICATION:-1}
MIN_INSYNC_REPLICAS=${MIN_INSYNC_REPLICAS:-}
COMMAND_CONFIG=${COMMAND_CONFIG:-}
RECONCILE=${RECONCILE:-1}
WAIT_SECONDS=${WAIT_SECONDS:-120}
DRY_RUN=${DRY_RUN:-0}

log() { printf 'create-topics: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

if ! is_uint "$REPLICATION" || ((REPLICATION < 1)); then
  die "REPLICATION must be a positive integer, got '$REPLICATION'"
fi
[[ -z $MIN_INSYNC_REPLICAS ]] || is_uint "$MIN_INSYNC_REPLICAS" || die "MIN_INSYNC_REPLICAS must be an integer"
[[ -r $TOPICS_FILE ]] || die "cannot read TOPICS_FILE=$TOPICS_FILE"

# topics.yaml -> one line per topic: name|partitions|replicationFactor|key=value key=value ...
# Understands exactly the block layout used in topics.yaml, and fails on any line it
# does not understand, so the file cannot drift silently out of what it reads.
parse_topics() {
  awk '
    function trim(s) { sub(/^[ \t]+/, "", s); sub(/[ \t]+$/, "", s); return s }
    function unquote(s) {
      s = trim(s)
      if (s ~ /^".*"$/ || s ~ /^\047.*\047$/) s = substr(s, 2, length(s) - 2)
      return s
    }
    function flush() {
      if (name != "") print name "|" parts "|" rf "|" cfg
      name = ""; parts = ""; rf = ""; cfg = ""; in_cfg = 0
    }
    { sub(/\r$/, "") }
    /^[ \t]*#/ || /^[ \t]*$/ { next }
    { line = $0; sub(/[ \t]+#.*$/, "", line) }
    line ~ /^topics:[ \t]*$/ { next }
    line ~ /^  - name:/ { flush(); v = line; sub(/^  - name:/, "", v); name = unquote(v); next }
    line ~ /^    partitions:/ { v = line; sub(/^    partitions:/, "", v); parts = unquote(v); in_cfg = 0; next }
    line ~ /^    replicationFactor:/ { v = line; sub(/^    replicationFactor:/, "", v); rf = unquote(v); in_cfg = 0; next }
    line ~ /^    configs:[ \t]*$/ { in_cfg = 1; next }
    in_cfg && line ~ /^      [A-Za-z0-9._-]+:/ {
      v = trim(line); k = v; sub(/:.*$/, "", k); sub(/^[^:]*:/, "", v)
      cfg = cfg (cfg == "" ? "" : " ") k "=" unquote(v)
      next
    }
    { printf "create-topics: %s:%d: cannot parse: %s\n", FILENAME, NR, $0 > "/dev/stderr"; bad = 1 }
    END { flush(); if (bad) exit 1 }
  ' "$TOPICS_FILE"
}

# The tools. In DRY_RUN they are only printed, so bare names will do.
find_tool() {
  local t=$1
  if [[ -n ${KAFKA_BIN:-} ]]; then printf '%s/%s' "$KAFKA_BIN" "$t"
  elif command -v "$t" >/dev/null 2>&1; then command -v "$t"
  elif [[ -x /opt/kafka/bin/$t ]]; then printf '/opt/kafka/bin/%s' "$t"
  elif [[ $DRY_RUN == 1 ]]; then printf '%s' "$t"
  else die "$t not found: set KAFKA_BIN or put the Kafka bin folder on PATH"
  fi
}
KAFKA_TOPICS=$(find_tool kafka-topics.sh)
KAFKA_CONFIGS=$(find_tool kafka-configs.sh)

# Client settings: short admin timeouts, so a wait loop notices an unreachable broker
# quickly, then the user's COMMAND_CONFIG, whose keys win (later keys override).
CLIENT_CONFIG=""
if [[ $DRY_RUN != 1 ]]; then
  CLIENT_CONFIG=$(mktemp "${TMPDIR:-/tmp}/coalition-admin.XXXXXX")
  trap 'rm -f "$CLIENT_CONFIG"' EXIT
  printf '%s\n' 'request.timeout.ms=15000' 'default.api.timeout.ms=20000' >"$CLIENT_CONFIG"
  if [[ -n $COMMAND_CONFIG ]]; then
    [[ -r $COMMAND_CONFIG ]] || die "cannot read COMMAND_CONFIG=$COMMAND_CONFIG"
    cat "$COMMAND_CONFIG" >>"$CLIENT_CONFIG"
  fi
fi

run() {
  if [[ $DRY_RUN == 1 ]]; then
    printf '+'; printf ' %q' "$@"; printf '\n'
  else
    "$@"
  fi
}

admin_args=(--bootstrap-server "$BOOTSTRAP")
[[ -z $CLIENT_CONFIG ]] || admin_args+=(--command-config "$CLIENT_CONFIG")

# "name partitionCount" for every topic in the cluster.
describe_all() {
  "$KAFKA_TOPICS" "${admin_args[@]}" --describe --exclude-internal 2>/dev/null |
    awk '/^Topic:/ { t = ""; p = ""
           for (i = 1; i < NF; i++) { if ($i == "Topic:") t = $(i + 1); if ($i == "PartitionCount:") p = $(i + 1) }
           if (t != "") print t, p }'
}

parsed=$(parse_topics) || die "cannot parse $TOPICS_FILE"
[[ -n $parsed ]] || die "no topics in $TOPICS_FILE"

# Existing topics and their partition counts.
declare -A existing=()
if [[ $DRY_RUN == 1 ]]; then
  log "DRY_RUN: printing commands only; acting as if no topic exists"
else
  log "waiting up to ${WAIT_SECONDS}s for Kafka at $BOOTSTRAP"
  deadline=$((SECONDS + WAIT_SECONDS))
  until described=$(set -o pipefail; describe_all); do
    ((SECONDS < deadline)) || die "Kafka at $BOOTSTRAP did not answer within ${WAIT_SECONDS}s"
    sleep 3
  done
  while read -r t p; do
    [[ -n $t ]] && existing[$t]=$p
  done <<<"$described"
fi

max_isr=$((REPLICATION > 1 ? REPLICATION - 1 : 1))
created=0 reconciled=0 untouched=0 names=()

while IFS='|' read -r name partitions yaml_rf configs; do
  [[ -n $name ]] || continue
  if ! is_uint "$partitions" || ((partitions < 1)); then
    die "$name: partitions must be a positive integer, got '$partitions'"
  fi
  is_uint "$yaml_rf" || die "$name: replicationFactor must be an integer, got '$yaml_rf'"
  names+=("$name")

  # Topic configs, with min.insync.replicas fitted to the replication factor.
  cfg=()
  for kv in $configs; do
    k=${kv%%=*} v=${kv#*=}
    if [[ $k == min.insync.replicas ]]; then
      if [[ -n $MIN_INSYNC_REPLICAS ]]; then v=$MIN_INSYNC_REPLICAS
      elif ((v > max_isr)); then v=$max_isr
      fi
    fi
    cfg+=("$k=$v")
  done

  if [[ -z ${existing[$name]+set} ]]; then
    log "creating $name (partitions=$partitions replication=$REPLICATION ${cfg[*]})"
    create=("$KAFKA_TOPICS" "${admin_args[@]}" --create --if-not-exists --topic "$name"
      --partitions "$partitions" --replication-factor "$REPLICATION")
    for kv in "${cfg[@]}"; do create+=(--config "$kv"); done
    run "${create[@]}"
    created=$((created + 1))
  else
    have=${existing[$name]}
    if [[ $have != "$partitions" ]]; then
      # Not fixed automatically: adding partitions re-hashes entity ids and breaks
      # per-entity ordering, and Kafka cannot remove partitions.
      log "warning: $name has $have partitions, topics.yaml says $partitions (left as is)"
    fi
    if [[ $RECONCILE == 1 && ${#cfg[@]} -gt 0 ]]; then
      log "reconciling configs of existing $name"
      joined=$(IFS=,; printf '%s' "${cfg[*]}")
      run "$KAFKA_CONFIGS" "${admin_args[@]}" --alter --entity-type topics --entity-name "$name" --add-config "$joined"
      reconciled=$((reconciled + 1))
    else
      untouched=$((untouched + 1))
    fi
  fi
done <<<"$parsed"

if [[ $DRY_RUN != 1 ]]; then
  # Check that every topic is really there (another run may have raced us; that is fine).
  described=$(set -o pipefail; describe_all) || die "could not list topics after creating them"
  missing=()
  for n in "${names[@]}"; do
    awk -v n="$n" '$1 == n { found = 1 } END { exit !found }' <<<"$described" || missing+=("$n")
  done
  ((${#missing[@]} == 0)) || die "topics missing after creation: ${missing[*]}"
fi

log "done: ${#names[@]} topics (created $created, reconciled $reconciled, untouched $untouched)"
