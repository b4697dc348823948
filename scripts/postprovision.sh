#!/bin/sh
# azd postprovision hook (also safe to run by hand): writes local.settings.json from the azd environment so that
# `python -m sync` on the admin's machine reaches the deployed storage and Key Vault with `az login` credentials.
#
# Identity-based only: storage endpoint URIs and no AzureWebJobsStorage connection string, no keys. The Azure-only
# settings (AzureWebJobsStorage__credential/__clientId, AZURE_CLIENT_ID) are left out on purpose: locally the code
# falls back to DefaultAzureCredential, i.e. your `az login`.
set -eu

cd "$(dirname "$0")/.."
out=local.settings.json

# value NAME [DEFAULT]: a value of the current azd environment (`azd env get-values`), or DEFAULT.
value() {
  v=$(azd env get-value "$1" 2>/dev/null) || v=""
  case "$v" in
    ERROR:*) v="" ;;
  esac
  if [ -z "$v" ]; then v="${2:-}"; fi
  printf '%s' "$v"
}

# JSON string escaping for the few characters that can appear in these values.
json() {
  printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'
}

table_uri=$(value AZURE_STORAGE_TABLE_ENDPOINT)
if [ -z "$table_uri" ]; then
  echo "postprovision: AZURE_STORAGE_TABLE_ENDPOINT is not in the azd environment; run 'azd provision' first." >&2
  exit 1
fi

if [ -f "$out" ]; then
  cp "$out" "$out.bak"
  echo "postprovision: kept the previous $out as $out.bak"
fi

tmp="$out.tmp"
{
  printf '{\n  "IsEncrypted": false,\n  "Values": {\n'
  printf '    "FUNCTIONS_WORKER_RUNTIME": "python",\n'
  printf '    "AzureWebJobsStorage__blobServiceUri": "%s",\n' "$(json "$(value AZURE_STORAGE_BLOB_ENDPOINT)")"
  printf '    "AzureWebJobsStorage__queueServiceUri": "%s",\n' "$(json "$(value AZURE_STORAGE_QUEUE_ENDPOINT)")"
  printf '    "AzureWebJobsStorage__tableServiceUri": "%s",\n' "$(json "$table_uri")"
  printf '    "CTCS_KEY_VAULT_URI": "%s",\n' "$(json "$(value AZURE_KEY_VAULT_URI)")"
  printf '    "CTCS_HOSTING_CLOUD": "%s",\n' "$(json "$(value CTCS_HOSTING_CLOUD global)")"
  printf '    "CTCS_SECRET_ENV_PREFIX": "%s",\n' "$(json "$(value CTCS_SECRET_ENV_PREFIX CTCS_SECRET_)")"
  printf '    "CTCS_SECRET_FILE_DIR": "%s",\n' "$(json "$(value CTCS_SECRET_FILE_DIR '~/.ctcs/secrets')")"
  printf '    "CTCS_ALLOWED_CLOUD_HOSTS": "%s",\n' "$(json "$(value CTCS_ALLOWED_CLOUD_HOSTS)")"
  printf '    "SYNC_SCHEDULE": "%s",\n' "$(json "$(value SYNC_SCHEDULE '0 */5 * * * *')")"
  printf '    "CTCS_PAIRS_TABLE": "%s",\n' "$(json "$(value CTCS_PAIRS_TABLE TenantPairs)")"
  printf '    "CTCS_PAIR_STATE_TABLE": "%s",\n' "$(json "$(value CTCS_PAIR_STATE_TABLE PairState)")"
  printf '    "CTCS_CONTACT_STATE_TABLE": "%s",\n' "$(json "$(value CTCS_CONTACT_STATE_TABLE ContactState)")"
  printf '    "CTCS_RUNS_TABLE": "%s",\n' "$(json "$(value CTCS_RUNS_TABLE SyncRuns)")"
  printf '    "CTCS_GROUPS_TABLE": "%s",\n' "$(json "$(value CTCS_GROUPS_TABLE GroupMembership)")"
  printf '    "CTCS_TARGETS_TABLE": "%s",\n' "$(json "$(value CTCS_TARGETS_TABLE TargetState)")"
  printf '    "CTCS_OPS_QUEUE": "%s",\n' "$(json "$(value CTCS_OPS_QUEUE contact-ops)")"
  printf '    "CTCS_PAIR_RUNS_QUEUE": "%s",\n' "$(json "$(value CTCS_PAIR_RUNS_QUEUE pair-runs)")"
  printf '    "CTCS_PLANNER_BUDGET_SECONDS": "%s",\n' "$(json "$(value CTCS_PLANNER_BUDGET_SECONDS 240)")"
  printf '    "CTCS_WORKER_CONCURRENCY": "%s",\n' "$(json "$(value CTCS_WORKER_CONCURRENCY 16)")"
  printf '    "CTCS_EXCHANGE_MAX_CONCURRENCY": "%s",\n' "$(json "$(value CTCS_EXCHANGE_MAX_CONCURRENCY 16)")"
  printf '    "CTCS_LOOKUP_BATCH": "%s",\n' "$(json "$(value CTCS_LOOKUP_BATCH 16)")"
  printf '    "CTCS_QUOTA_BACKOFF_SECONDS": "%s",\n' "$(json "$(value CTCS_QUOTA_BACKOFF_SECONDS '900,3600,14400')")"
  printf '    "CTCS_RUN_WAIT_SECONDS": "%s",\n' "$(json "$(value CTCS_RUN_WAIT_SECONDS 120)")"
  printf '    "CTCS_CHANGE_NOTIFICATIONS": "%s",\n' "$(json "$(value CTCS_CHANGE_NOTIFICATIONS auto)")"
  printf '    "CTCS_NOTIFICATION_URL": "%s",\n' "$(json "$(value CTCS_NOTIFICATION_URL)")"
  printf '    "CTCS_NOTIFICATION_DELAY_SECONDS": "%s",\n' "$(json "$(value CTCS_NOTIFICATION_DELAY_SECONDS 5)")"
  printf '    "CTCS_LEASE_SECONDS": "%s"\n' "$(json "$(value CTCS_LEASE_SECONDS 600)")"
  printf '  }\n}\n'
} > "$tmp"
mv "$tmp" "$out"

echo "postprovision: wrote $out for $(value AZURE_FUNCTION_APP_NAME) (storage $(value AZURE_STORAGE_ACCOUNT_NAME), no keys)."
