#!/usr/bin/env pwsh
# azd postprovision hook (also safe to run by hand): writes local.settings.json from the azd environment so that
# `python -m sync` on the admin's machine reaches the deployed storage and Key Vault with `az login` credentials.
#
# Identity-based only: storage endpoint URIs and no AzureWebJobsStorage connection string, no keys. The Azure-only
# settings (AzureWebJobsStorage__credential/__clientId, AZURE_CLIENT_ID) are left out on purpose: locally the code
# falls back to DefaultAzureCredential, i.e. your `az login`.
$ErrorActionPreference = 'Stop'

Set-Location (Join-Path $PSScriptRoot '..')
$out = 'local.settings.json'

# The current azd environment, parsed from `azd env get-values` (lines of NAME="value").
$envValues = @{}
foreach ($line in (azd env get-values)) {
    if ($line -match '^([A-Za-z_][A-Za-z0-9_]*)="?(.*?)"?$') {
        $envValues[$Matches[1]] = $Matches[2]
    }
}
if ($LASTEXITCODE -ne 0) { throw 'postprovision: azd env get-values failed' }

function Get-Value([string] $Name, [string] $Default = '') {
    $v = $envValues[$Name]
    if ([string]::IsNullOrEmpty($v)) { return $Default }
    return $v
}

$tableUri = Get-Value 'AZURE_STORAGE_TABLE_ENDPOINT'
if (-not $tableUri) {
    Write-Error "postprovision: AZURE_STORAGE_TABLE_ENDPOINT is not in the azd environment; run 'azd provision' first."
    exit 1
}

$values = [ordered]@{
    FUNCTIONS_WORKER_RUNTIME              = 'python'
    AzureWebJobsStorage__blobServiceUri   = Get-Value 'AZURE_STORAGE_BLOB_ENDPOINT'
    AzureWebJobsStorage__queueServiceUri  = Get-Value 'AZURE_STORAGE_QUEUE_ENDPOINT'
    AzureWebJobsStorage__tableServiceUri  = $tableUri
    CTCS_KEY_VAULT_URI                    = Get-Value 'AZURE_KEY_VAULT_URI'
    CTCS_HOSTING_CLOUD                    = Get-Value 'CTCS_HOSTING_CLOUD' 'global'
    CTCS_SECRET_ENV_PREFIX                = Get-Value 'CTCS_SECRET_ENV_PREFIX' 'CTCS_SECRET_'
    CTCS_SECRET_FILE_DIR                  = Get-Value 'CTCS_SECRET_FILE_DIR' '~/.ctcs/secrets'
    CTCS_ALLOWED_CLOUD_HOSTS              = Get-Value 'CTCS_ALLOWED_CLOUD_HOSTS'
    SYNC_SCHEDULE                         = Get-Value 'SYNC_SCHEDULE' '0 */5 * * * *'
    CTCS_PAIRS_TABLE                      = Get-Value 'CTCS_PAIRS_TABLE' 'TenantPairs'
    CTCS_PAIR_STATE_TABLE                 = Get-Value 'CTCS_PAIR_STATE_TABLE' 'PairState'
    CTCS_CONTACT_STATE_TABLE              = Get-Value 'CTCS_CONTACT_STATE_TABLE' 'ContactState'
    CTCS_RUNS_TABLE                       = Get-Value 'CTCS_RUNS_TABLE' 'SyncRuns'
    CTCS_GROUPS_TABLE                     = Get-Value 'CTCS_GROUPS_TABLE' 'GroupMembership'
    CTCS_TARGETS_TABLE                    = Get-Value 'CTCS_TARGETS_TABLE' 'TargetState'
    CTCS_OPS_QUEUE                        = Get-Value 'CTCS_OPS_QUEUE' 'contact-ops'
    CTCS_PAIR_RUNS_QUEUE                  = Get-Value 'CTCS_PAIR_RUNS_QUEUE' 'pair-runs'
    CTCS_PLANNER_BUDGET_SECONDS           = Get-Value 'CTCS_PLANNER_BUDGET_SECONDS' '240'
    CTCS_WORKER_CONCURRENCY               = Get-Value 'CTCS_WORKER_CONCURRENCY' '16'
    CTCS_EXCHANGE_MAX_CONCURRENCY         = Get-Value 'CTCS_EXCHANGE_MAX_CONCURRENCY' '16'
    CTCS_LOOKUP_BATCH                     = Get-Value 'CTCS_LOOKUP_BATCH' '16'
    CTCS_QUOTA_BACKOFF_SECONDS            = Get-Value 'CTCS_QUOTA_BACKOFF_SECONDS' '900,3600,14400'
    CTCS_RUN_WAIT_SECONDS                 = Get-Value 'CTCS_RUN_WAIT_SECONDS' '120'
    CTCS_CHANGE_NOTIFICATIONS             = Get-Value 'CTCS_CHANGE_NOTIFICATIONS' 'auto'
    CTCS_NOTIFICATION_URL                 = Get-Value 'CTCS_NOTIFICATION_URL'
    CTCS_NOTIFICATION_DELAY_SECONDS       = Get-Value 'CTCS_NOTIFICATION_DELAY_SECONDS' '5'
    CTCS_LEASE_SECONDS                    = Get-Value 'CTCS_LEASE_SECONDS' '600'
}

if (Test-Path $out) {
    Copy-Item $out "$out.bak" -Force
    Write-Host "postprovision: kept the previous $out as $out.bak"
}

[ordered]@{ IsEncrypted = $false; Values = $values } |
    ConvertTo-Json -Depth 3 |
    Set-Content -Path $out -Encoding utf8

Write-Host "postprovision: wrote $out for $(Get-Value 'AZURE_FUNCTION_APP_NAME') (storage $(Get-Value 'AZURE_STORAGE_ACCOUNT_NAME'), no keys)."
