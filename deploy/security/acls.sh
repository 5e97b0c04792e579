#!/usr/bin/env bash
# Creates the SCRAM users and the ACLs Coalition Graph needs, with the Kafka CLI
# (kafka-configs.sh, kafka-acls.sh). Idempotent: re-adding a user or an ACL is a no-op.
#
#   BOOTSTRAP=broker1:9093 COMMAND_CONFIG=admin.properties PARTNERS="nachw sanofi" deploy/security/acls.sh
#
# Environment:
#   BOOTSTRAP        brokers (required unless DRY_RUN=1)
#   COMMAND_CONFIG   client .properties of an admin (a super user), for SASL_SSL
#   PARTNERS         partner ids that produce directly to Kafka (user partner-<id> each); optional
#   KAFKA_BIN        directory of the Kafka CLI, if not on PATH
#   DRY_RUN=1        print the commands only
# Passwords come from COALITION_SERVER_PASSWORD, COALITION_ADMIN_PASSWORD and
# PARTNER_<ID>_PASSWORD (id upper-cased, dashes as underscores); a user without one is not
# (re)created, only its ACLs are.
set -euo pipefail

BOOTSTRAP=${BOOTSTRAP:-}
DRY_RUN=${DRY_RUN:-0}
KAFKA_BIN=${KAFKA_BIN:-}
PARTNERS=${PARTNERS:-}
if [[ -z $BOOTSTRAP && $DRY_RUN != 1 ]]; then
  echo "acls.sh: set BOOTSTRAP (or DRY_RUN=1)" >&2
  exit 2
fi
BOOTSTRAP=${BOOTSTRAP:-broker:9093}

# A partner that produces events itself writes only to its own inbox topic,
# coalition.inbox.<partner id>.v1; the materializer consumes every inbox and dead-letters
# (reason partner_mismatch) any event there whose partnerid is not the inbox's partner.

tool() { if [[ -n $KAFKA_BIN ]]; then echo "$KAFKA_BIN/$1"; else echo "$1"; fi; }
run() {
  local cmd=("$@")
  if [[ -n ${COMMAND_CONFIG:-} ]]; then cmd+=(--command-config "$COMMAND_CONFIG"); fi
  if [[ $DRY_RUN == 1 ]]; then printf '%q ' "${cmd[@]}"; echo; else "${cmd[@]}"; fi
}
# The password is on the command line of kafka-configs.sh: run this from a trusted admin host.
scram_user() { # user password-or-empty
  if [[ -z $2 ]]; then echo "acls.sh: no password for $1; leaving its credentials as they are" >&2; return; fi
  local password=$2
  if [[ $DRY_RUN == 1 ]]; then password='<redacted>'; fi
  run "$(tool kafka-configs.sh)" --bootstrap-server "$BOOTSTRAP" --alter --entity-type users --entity-name "$1" \
    --add-config "SCRAM-SHA-512=[password=$password]"
}
acl() { run "$(tool kafka-acls.sh)" --bootstrap-server "$BOOTSTRAP" --add --force "$@"; }

# coalition-server: the materializer (reads every coalition topic, one consumer group per
# replica, all named coalition*), the dead-letter producer, and the GraphQL mutations (which
# produce partner events after authenticating the caller's token).
scram_user coalition-server "${COALITION_SERVER_PASSWORD:-}"
acl --allow-principal User:coalition-server --operation Read --operation Describe \
  --topic coalition. --resource-pattern-type prefixed
acl --allow-principal User:coalition-server --operation Write --operation Describe \
  --topic coalition. --resource-pattern-type prefixed
acl --allow-principal User:coalition-server --operation Read --operation Describe \
  --group coalition --resource-pattern-type prefixed

# coalition-admin: creates and reconciles topics (create-topics.sh), publishes the seed and imports.
scram_user coalition-admin "${COALITION_ADMIN_PASSWORD:-}"
acl --allow-principal User:coalition-admin --operation Create --operation Alter --operation Describe \
  --operation DescribeConfigs --operation AlterConfigs --operation Write \
  --topic coalition. --resource-pattern-type prefixed

# partner-<id>: may write only its own inbox and read nothing. Kafka does not tell consumers who
# produced a record; the inbox is what binds a record to its producer: only User:partner-<id>
# can write coalition.inbox.<id>.v1, and the materializer refuses events there that claim
# another partner. The entity topics themselves are written only by coalition-server (the
# GraphQL API, which checks the caller's token) and coalition-admin.
for p in $PARTNERS; do
  var="PARTNER_$(echo "$p" | tr 'a-z-' 'A-Z_')_PASSWORD"
  scram_user "partner-$p" "${!var:-}"
  acl --allow-principal "User:partner-$p" --operation Write --operation Describe --topic "coalition.inbox.$p.v1"
done
