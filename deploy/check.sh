#!/usr/bin/env bash
# The `bash -c '...' _ args` snippets expand their arguments inside, on purpose:
# shellcheck disable=SC2016
#
# Checks the deploy/ files without a Docker engine, a Kubernetes cluster or a Kafka broker.
#
#   bash deploy/check.sh        # from anywhere; exits 1 if any check fails
#
# Always (needs bash, python3 and PyYAML):
#   - bash -n on the scripts; the k8s/topics/ copies equal deploy/create-topics.sh and topics.yaml
#   - topics.yaml: the 12 topics and the retention/durability policy; same names as the Rust code
#   - create-topics.sh: dry-run commands, and real runs against stub kafka-topics.sh /
#     kafka-configs.sh (create, reconcile, partition warning, broker timeout), with mawk/gawk
#     and, if installed, busybox awk (the awk in the apache/kafka image)
#   - compose.yaml, k8s/*.yaml and Dockerfile parsed with PyYAML and checked for structure
# When the tool is installed (otherwise reported as skipped):
#   - shellcheck on the scripts
#   - `docker compose config` (the Compose v2 CLI plugin)
#   - `kubectl kustomize deploy/k8s`, its output checked for structure, then
#     `kubernetes-validate --strict` (PyPI) against the Kubernetes schemas
#
# If PyYAML is missing, it is installed with pip unless CHECK_NO_INSTALL=1.
# Prints `deploy-check: N passed, N failed, N skipped` last.
set -uo pipefail

DEPLOY=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$DEPLOY/.." && pwd)
PY=${PYTHON:-python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

passed=0 failed=0 skipped=0
failures=()

# check NAME COMMAND...: runs COMMAND, and counts it as passed or failed. Prints its output on failure.
check() {
  local name=$1; shift
  if "$@" >"$WORK/out" 2>&1; then
    passed=$((passed + 1)); printf 'ok    %s\n' "$name"
  else
    failed=$((failed + 1)); failures+=("$name"); printf 'FAIL  %s\n' "$name"
    sed 's/^/      /' "$WORK/out" | tail -n 40
  fi
}
skip() { skipped=$((skipped + 1)); printf 'skip  %s (%s)\n' "$1" "$2"; }
have() { command -v "$1" >/dev/null 2>&1; }
pycheck() { "$PY" "$DEPLOY/check_deploy.py" "$@"; }

# --- prerequisites ---------------------------------------------------------------
if ! "$PY" -c 'import yaml' 2>/dev/null; then
  if [[ ${CHECK_NO_INSTALL:-0} != 1 ]]; then
    echo "PyYAML missing: installing it with pip"
    "$PY" -m pip install --quiet pyyaml >/dev/null 2>&1 || true
  fi
fi
if ! "$PY" -c 'import yaml' 2>/dev/null; then
  echo "deploy-check: needs python3 with PyYAML (pip install pyyaml)" >&2
  echo "deploy-check: 0 passed, 1 failed"
  exit 1
fi

# --- scripts -------------------------------------------------------------------------
scripts=("$DEPLOY/create-topics.sh" "$DEPLOY/check.sh" "$DEPLOY/k8s/topics/create-topics.sh")
check "bash -n on scripts" bash -c 'for f; do bash -n "$f" || exit 1; done' _ "${scripts[@]}"
if have shellcheck; then
  check "shellcheck" shellcheck "${scripts[@]}"
else
  skip "shellcheck" "shellcheck not installed"
fi
check "k8s/topics/ copies are up to date" bash -c '
  cmp "$1/create-topics.sh" "$1/k8s/topics/create-topics.sh" &&
  cmp "$1/topics.yaml" "$1/k8s/topics/topics.yaml" ||
  { echo "run: cp deploy/create-topics.sh deploy/topics.yaml deploy/k8s/topics/"; exit 1; }' _ "$DEPLOY"

# --- topics ------------------------------------------------------------------------
check "topics.yaml: topics and policies" pycheck topics "$DEPLOY"
if [[ -d $REPO/services/events/src ]]; then
  check "topics.yaml matches the Rust topic names" pycheck rust "$DEPLOY" "$REPO"
else
  skip "topics.yaml matches the Rust topic names" "services/events/src not found"
fi

dryrun() { # dryrun REPLICATION [awk dir prepended to PATH]
  local path=$PATH
  [[ -z ${2:-} ]] || path=$2:$PATH
  PATH=$path DRY_RUN=1 REPLICATION=$1 KAFKA_BIN='' bash "$DEPLOY/create-topics.sh" 2>/dev/null |
    pycheck dryrun "$DEPLOY" "$1"
}
check "create-topics.sh dry run, REPLICATION=1" dryrun 1
check "create-topics.sh dry run, REPLICATION=3" dryrun 3
if have busybox && busybox awk 'BEGIN{}' 2>/dev/null; then
  mkdir -p "$WORK/bb" && ln -sf "$(command -v busybox)" "$WORK/bb/awk"
  check "create-topics.sh dry run with busybox awk" dryrun 3 "$WORK/bb"
else
  skip "create-topics.sh dry run with busybox awk" "busybox not installed"
fi
check "create-topics.sh rejects a malformed topics.yaml" bash -c '
  printf "topics:\n  - name: x\n    partitions: 3\n   bad indent: 1\n" >"$2/bad.yaml"
  ! DRY_RUN=1 TOPICS_FILE="$2/bad.yaml" bash "$1/create-topics.sh" 2>"$2/bad.log" && grep -q "cannot parse" "$2/bad.log"' _ "$DEPLOY" "$WORK"

# Stub Kafka CLI: keeps topics in $STUB_STATE as `name partitions rf k=v,k=v`.
mkdir -p "$WORK/kafka"
cat >"$WORK/kafka/kafka-topics.sh" <<'STUB'
#!/usr/bin/env bash
set -euo pipefail
: "${STUB_STATE:?}"; touch "$STUB_STATE"
mode="" topic="" parts="" rf="" cfg=""
while (($#)); do
  case $1 in
    --describe) mode=describe ;;
    --create) mode=create ;;
    --topic) topic=$2; shift ;;
    --partitions) parts=$2; shift ;;
    --replication-factor) rf=$2; shift ;;
    --config) cfg=${cfg:+$cfg,}$2; shift ;;
    --bootstrap-server|--command-config) shift ;;
  esac
  shift
done
if [[ -f ${STUB_DOWN:-/nonexistent} ]]; then
  n=$(cat "$STUB_DOWN")
  if ((n > 0)); then echo $((n - 1)) >"$STUB_DOWN"; echo "TimeoutException" >&2; exit 1; fi
fi
case $mode in
  describe)
    while read -r t p r c; do
      printf 'Topic: %s\tTopicId: stub\tPartitionCount: %s\tReplicationFactor: %s\tConfigs: %s\n' "$t" "$p" "$r" "$c"
      for ((i = 0; i < p; i++)); do printf '\tTopic: %s\tPartition: %d\tLeader: 1\tReplicas: 1\tIsr: 1\n' "$t" "$i"; done
    done <"$STUB_STATE" ;;
  create)
    awk -v t="$topic" '$1 == t { f = 1 } END { exit !f }' "$STUB_STATE" ||
      echo "$topic $parts $rf $cfg" >>"$STUB_STATE" ;;
  *) exit 2 ;;
esac
STUB
cat >"$WORK/kafka/kafka-configs.sh" <<'STUB'
#!/usr/bin/env bash
set -euo pipefail
: "${STUB_STATE:?}"
name="" add=""
while (($#)); do
  case $1 in
    --entity-name) name=$2; shift ;;
    --add-config) add=$2; shift ;;
  esac
  shift
done
# Merge: keys in --add-config replace the stored ones.
awk -v t="$name" -v add="$add" '
  $1 != t { print; next }
  { n = split($4, kv, ","); delete m; delete order; k = 0
    for (i = 1; i <= n; i++) { split(kv[i], p, "="); if (!(p[1] in m)) order[++k] = p[1]; m[p[1]] = substr(kv[i], length(p[1]) + 2) }
    n = split(add, kv, ",")
    for (i = 1; i <= n; i++) { split(kv[i], p, "="); if (!(p[1] in m)) order[++k] = p[1]; m[p[1]] = substr(kv[i], length(p[1]) + 2) }
    s = ""; for (i = 1; i <= k; i++) s = s (s == "" ? "" : ",") order[i] "=" m[order[i]]
    print $1, $2, $3, s }' "$STUB_STATE" >"$STUB_STATE.new"
mv "$STUB_STATE.new" "$STUB_STATE"
STUB
chmod +x "$WORK/kafka/"*.sh

stubrun() { # stubrun STATE [VAR=value ...]: runs create-topics.sh against the stub, log in $STATE.log
  local state=$1; shift
  env STUB_STATE="$state" KAFKA_BIN="$WORK/kafka" BOOTSTRAP=stub:9092 TMPDIR="$WORK" "$@" \
    bash "$DEPLOY/create-topics.sh" >"$state.log" 2>&1
}
stub_create() {
  local s=$WORK/s1; echo 1 >"$WORK/down1"
  stubrun "$s" REPLICATION=3 WAIT_SECONDS=30 STUB_DOWN="$WORK/down1" || { cat "$s.log"; return 1; }
  if ! grep -q 'waiting up to' "$s.log" || ! grep -q 'created 12, reconciled 0' "$s.log"; then cat "$s.log"; return 1; fi
  pycheck stubstate "$DEPLOY" 3 "$s"
}
stub_reconcile() {
  local s=$WORK/s2
  stubrun "$s" REPLICATION=3 || { cat "$s.log"; return 1; }
  # Drift: a broker default crept into one topic's configs.
  sed -i 's/^\(coalition\.partners\.v1 .*\)retention\.ms=-1/\1retention.ms=604800000/' "$s"
  grep -q 'retention.ms=604800000' "$s" || { echo "could not inject drift"; return 1; }
  stubrun "$s" REPLICATION=3 || { cat "$s.log"; return 1; }
  grep -q 'created 0, reconciled 12' "$s.log" || { cat "$s.log"; return 1; }
  pycheck stubstate "$DEPLOY" 3 "$s"
}
stub_partitions() {
  local s=$WORK/s3
  stubrun "$s" REPLICATION=1 || { cat "$s.log"; return 1; }
  sed -i 's/^coalition\.people\.v1 3 /coalition.people.v1 6 /' "$s"
  stubrun "$s" REPLICATION=1 RECONCILE=0 || { cat "$s.log"; return 1; }
  if ! grep -q 'warning: coalition.people.v1 has 6 partitions' "$s.log" || ! grep -q 'untouched 12' "$s.log"; then
    cat "$s.log"; return 1
  fi
}
stub_timeout() {
  local s=$WORK/s4; echo 1000 >"$WORK/down4"
  if stubrun "$s" WAIT_SECONDS=1 STUB_DOWN="$WORK/down4"; then echo "succeeded with no broker"; return 1; fi
  grep -q 'did not answer' "$s.log" || { cat "$s.log"; return 1; }
}
check "create-topics.sh vs stub Kafka: waits, then creates all" stub_create
check "create-topics.sh vs stub Kafka: reconciles drifted configs" stub_reconcile
check "create-topics.sh vs stub Kafka: warns on partition mismatch" stub_partitions
check "create-topics.sh vs stub Kafka: fails when brokers never answer" stub_timeout

# --- compose --------------------------------------------------------------------------
check "compose.yaml structure (PyYAML)" pycheck compose "$DEPLOY/compose.yaml"
if docker compose version >/dev/null 2>&1; then
  check "docker compose config" docker compose -f "$DEPLOY/compose.yaml" config --quiet
else
  skip "docker compose config" "docker compose plugin not installed; PyYAML check above only"
fi

# --- Dockerfile ---------------------------------------------------------------------
check "Dockerfile essentials" pycheck dockerfile "$DEPLOY/Dockerfile"

# --- Kubernetes ---------------------------------------------------------------------
check "k8s/*.yaml parse and structure (PyYAML)" pycheck k8s "$DEPLOY/k8s"
if have kubectl && kubectl kustomize --help >/dev/null 2>&1; then
  check "kubectl kustomize deploy/k8s" bash -c 'kubectl kustomize "$1" >"$2"' _ "$DEPLOY/k8s" "$WORK/rendered.yaml"
  if [[ -s $WORK/rendered.yaml ]]; then
    check "rendered manifests structure" pycheck rendered "$WORK/rendered.yaml"
    if have kubernetes-validate; then
      check "kubernetes-validate --strict (rendered)" kubernetes-validate --strict --quiet "$WORK/rendered.yaml"
    else
      skip "kubernetes-validate" "not installed (pip install kubernetes-validate)"
    fi
  fi
else
  skip "kubectl kustomize deploy/k8s" "kubectl not installed"
  skip "kubernetes-validate" "needs the kustomize output"
fi

# --- summary --------------------------------------------------------------------------
if ((failed)); then
  printf 'failed: %s\n' "${failures[@]}"
fi
echo "deploy-check: $passed passed, $failed failed, $skipped skipped"
((failed == 0))
