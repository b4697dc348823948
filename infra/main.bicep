// ctcs (Cross-Tenant Contact Sync): everything one deployment needs, secretless by default.
//
// One resource group holding a Flex Consumption Function App that runs as a user-assigned managed identity, the
// storage account behind it (no shared keys: the app, the host and the deployment all use Entra tokens), a Key Vault
// in RBAC mode for the per-pair `kv:` references, and Application Insights that only accepts Entra-authenticated
// telemetry. `azd up` deploys it; docs/deploy.md walks an admin through it.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; it seeds the unique suffix of every resource name.')
param environmentName string

@minLength(1)
@description('Region of every resource. It must offer the Flex Consumption plan (az functionapp list-flexconsumption-locations).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the admin who runs `azd up`. When set, they get the data roles that `python -m sync` needs from their own machine. Leave empty to grant nothing.')
param principalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
@description('Kind of principal `principalId` is (ServicePrincipal when a pipeline runs azd).')
param principalType string = 'User'

@description('Optional override of the resource group name.')
param resourceGroupName string = ''

@minValue(1)
@maxValue(10)
@description('Most instances the app may scale out to. Exchange calls are paced per target organisation across all instances (docs/host-settings.md, Sizing): more instances add waiting invocations, not throughput.')
param maximumInstanceCount int = 2

@allowed([
  512
  2048
  4096
])
@description('Memory of each Flex Consumption instance, in MB.')
param instanceMemoryMB int = 2048

@description('NCRONTAB schedule (UTC, six fields) of the timer that plans every pair (app setting SYNC_SCHEDULE).')
param syncSchedule string = '0 */5 * * * *'

@description('Table of tenant pair definitions (app setting CTCS_PAIRS_TABLE).')
param pairsTableName string = 'TenantPairs'

@description('Table of per-pair deltaLink, lease and quarantine (app setting CTCS_PAIR_STATE_TABLE).')
param pairStateTableName string = 'PairState'

@description('Table of one row per synced source user (app setting CTCS_CONTACT_STATE_TABLE).')
param contactStateTableName string = 'ContactState'

@description('Table of one row per planning run (app setting CTCS_RUNS_TABLE).')
param runsTableName string = 'SyncRuns'

@description('Table of the membership graph and groups deltaLinks of pairs that scope by group (app setting CTCS_GROUPS_TABLE).')
param groupsTableName string = 'GroupMembership'

@description('Table of the creation-quota pause and the shared pace of each target organisation (app setting CTCS_TARGETS_TABLE).')
param targetsTableName string = 'TargetState'

@description('Queue of contact operations (app setting CTCS_OPS_QUEUE); the host moves failures to <name>-poison.')
param opsQueueName string = 'contact-ops'

@description('Queue of requests to plan one pair (app setting CTCS_PAIR_RUNS_QUEUE); the timer, the HTTP resync and planners handing a long round on feed it.')
param pairRunsQueueName string = 'pair-runs'

@minValue(30)
@maxValue(480)
@description('Seconds one planner invocation works before it hands the rest of a round on (app setting CTCS_PLANNER_BUDGET_SECONDS); keep it well under host.json functionTimeout (10 minutes).')
param plannerBudgetSeconds int = 240

@allowed(['auto', 'on', 'off'])
@description('Graph change notifications start a pair\'s run within seconds of a change (app setting CTCS_CHANGE_NOTIFICATIONS); auto is on in Azure.')
param changeNotifications string = 'auto'

@description('Public HTTPS address of the notification route (app setting CTCS_NOTIFICATION_URL); empty: https://<the app\'s host name>/api/notifications.')
param notificationUrl string = ''

@minValue(0)
@maxValue(60)
@description('Seconds from the first change notification of a burst to the pair\'s run (app setting CTCS_NOTIFICATION_DELAY_SECONDS).')
param notificationDelaySeconds int = 5

@minValue(60)
@description('Seconds a planning run holds a pair\'s lease (app setting CTCS_LEASE_SECONDS).')
param leaseSeconds int = 600

@minValue(0)
@maxValue(64)
@description('Most Exchange cmdlets at once per target organisation, all instances together; ctcs finds the tenant\'s own limit below it (app setting CTCS_EXCHANGE_MAX_CONCURRENCY; 0 turns pacing off).')
param exchangeMaxConcurrency int = 16

@minValue(1)
@maxValue(16)
@description('Creates that share one Get-Recipient look-up (app setting CTCS_LOOKUP_BATCH).')
param lookupBatch int = 16

@description('Seconds creates wait after the creation quota is reached, step by step (app setting CTCS_QUOTA_BACKOFF_SECONDS).')
param quotaBackoffSeconds string = '900,3600,14400'
@description('Email address that receives the alerts (a pair quarantined, operations poisoned, a pair without a successful run for two hours, sign-ins refused). Empty: no action group and no alert rules are deployed.')
param alertEmail string = ''

@allowed([
  'auto'
  'on'
  'off'
])
@description('Send telemetry to Application Insights with Microsoft Entra authentication (local keys off). `auto`: on in the global cloud, off in sovereign clouds, where the Functions host cannot use Entra authentication for Application Insights and would silently lose telemetry.')
param applicationInsightsEntraAuth string = 'auto'

@description('Make the function keys by role (ctcs-read, ctcs-operate, ctcs-dangerous) from the Key Vault secrets ctcs-key-read, ctcs-key-operate and ctcs-key-dangerous. Off for the first `azd provision`, which makes the vault; turn it on once the admin has stored the three secrets (docs/deploy.md).')
param roleKeysFromVault bool = false

var abbrs = loadJsonContent('./abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}

var functionAppName = '${abbrs.webSitesFunctions}ctcs-${resourceToken}'
var storageAccountName = '${abbrs.storageStorageAccounts}${resourceToken}'
var keyVaultName = '${abbrs.keyVaultVaults}${resourceToken}'
var deploymentContainerName = 'app-package-${take(resourceToken, 7)}'

// The cloud this deployment runs in, as ctcs names it (CTCS_HOSTING_CLOUD): managed identity federation takes its token
// audience from it. US Gov DoD regions are in the AzureUSGovernment environment and share its Entra authority.
var hostingCloud = environment().name == 'AzureUSGovernment' ? 'usgov' : environment().name == 'AzureChinaCloud' ? 'china' : 'global'
var entraTelemetry = applicationInsightsEntraAuth == 'on' || (applicationInsightsEntraAuth == 'auto' && environment().name == 'AzureCloud')

// Identity-based storage endpoints (no keys): the same URIs go to the app settings, the outputs and local.settings.json.
var storageSuffix = environment().suffixes.storage
var blobServiceUri = 'https://${storageAccountName}.blob.${storageSuffix}'
var queueServiceUri = 'https://${storageAccountName}.queue.${storageSuffix}'
var tableServiceUri = 'https://${storageAccountName}.table.${storageSuffix}'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

// The one identity of the app: storage, Key Vault, App Insights, and the federated credential that the tenant apps trust.
module identity 'br/public:avm/res/managed-identity/user-assigned-identity:0.4.1' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}ctcs-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage './app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: storageAccountName
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    // -failed keeps poisoned ops for replay-poison, -parked the ops of pairs quarantined for their credentials.
    queueNames: [
      opsQueueName
      '${opsQueueName}-poison'
      '${opsQueueName}-failed'
      '${opsQueueName}-parked'
      pairRunsQueueName
    ]
    tableNames: [
      pairsTableName
      pairStateTableName
      contactStateTableName
      runsTableName
      groupsTableName
      targetsTableName
    ]
  }
}

module keyVault './app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: keyVaultName
    location: location
    tags: tags
  }
}

module monitoring './app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
    entraAuth: entraTelemetry
  }
}

// Alerts need someone to tell: without alertEmail there is no action group and no rule.
module alerts './app/alerts.bicep' = if (!empty(alertEmail)) {
  name: 'alerts'
  scope: rg
  params: {
    namePrefix: 'ctcs-${resourceToken}'
    location: location
    tags: tags
    applicationInsightsId: monitoring.outputs.applicationInsightsResourceId
    alertEmail: alertEmail
  }
}

module workbook './app/workbook.bicep' = {
  name: 'workbook'
  scope: rg
  params: {
    location: location
    tags: tags
    applicationInsightsId: monitoring.outputs.applicationInsightsResourceId
  }
}

module rbac './app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    identityPrincipalId: identity.outputs.principalId
    userPrincipalId: principalId
    userPrincipalType: principalType
  }
}

// The ctcs settings (sync/settings.py SETTINGS); function.bicep adds the platform ones (AzureWebJobsStorage__*, App Insights).
var ctcsAppSettings = {
  AZURE_CLIENT_ID: identity.outputs.clientId
  CTCS_KEY_VAULT_URI: keyVault.outputs.uri
  CTCS_HOSTING_CLOUD: hostingCloud
  // What a pair row may reach (docs/settings.md): env: names with this prefix, file: paths under this directory,
  // and no custom cloud in Azure unless its hosts are listed here (comma-separated).
  CTCS_SECRET_ENV_PREFIX: 'CTCS_SECRET_'
  CTCS_SECRET_FILE_DIR: '~/.ctcs/secrets'
  CTCS_ALLOWED_CLOUD_HOSTS: ''
  SYNC_SCHEDULE: syncSchedule
  CTCS_PAIRS_TABLE: pairsTableName
  CTCS_PAIR_STATE_TABLE: pairStateTableName
  CTCS_CONTACT_STATE_TABLE: contactStateTableName
  CTCS_RUNS_TABLE: runsTableName
  CTCS_GROUPS_TABLE: groupsTableName
  CTCS_TARGETS_TABLE: targetsTableName
  CTCS_OPS_QUEUE: opsQueueName
  CTCS_PAIR_RUNS_QUEUE: pairRunsQueueName
  CTCS_PLANNER_BUDGET_SECONDS: string(plannerBudgetSeconds)
  CTCS_LEASE_SECONDS: string(leaseSeconds)
  CTCS_CHANGE_NOTIFICATIONS: changeNotifications
  CTCS_NOTIFICATION_URL: notificationUrl
  // The app's own secrets: Key Vault references, resolved by the platform with the app's identity.
  CTCS_NOTIFICATION_KEY: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=ctcs-notification-key)'
  CTCS_KEY_READ: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=ctcs-key-read)'
  CTCS_KEY_OPERATE: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=ctcs-key-operate)'
  CTCS_KEY_DANGEROUS: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=ctcs-key-dangerous)'
  CTCS_NOTIFICATION_DELAY_SECONDS: string(notificationDelaySeconds)
  CTCS_EXCHANGE_MAX_CONCURRENCY: string(exchangeMaxConcurrency)
  CTCS_LOOKUP_BATCH: string(lookupBatch)
  CTCS_QUOTA_BACKOFF_SECONDS: quotaBackoffSeconds
}

module functionApp './app/function.bicep' = {
  name: 'function'
  scope: rg
  params: {
    name: functionAppName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    identityResourceId: identity.outputs.resourceId
    identityClientId: identity.outputs.clientId
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    deploymentContainerUrl: '${blobServiceUri}/${deploymentContainerName}'
    blobServiceUri: blobServiceUri
    queueServiceUri: queueServiceUri
    tableServiceUri: tableServiceUri
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    // Graph gives a notification 3 s: with notifications on (auto is on in Azure) one HTTP instance stays warm.
    httpAlwaysReady: changeNotifications != 'off'
    appSettings: ctcsAppSettings
    applicationInsightsEntraAuth: entraTelemetry
  }
  // The host must reach storage as soon as it starts; grant the roles first.
  dependsOn: [
    rbac
    storage
  ]
}

// The function keys by role, their values read from Key Vault into @secure() module parameters (never in the
// deployment history). Needs the three secrets, so it waits for roleKeysFromVault (docs/deploy.md).
resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
  scope: rg
}

module hostKeys './app/hostkeys.bicep' = if (roleKeysFromVault) {
  name: 'hostkeys'
  scope: rg
  params: {
    functionAppName: functionApp.outputs.name
    readKeyValue: vault.getSecret('ctcs-key-read')
    operateKeyValue: vault.getSecret('ctcs-key-operate')
    dangerousKeyValue: vault.getSecret('ctcs-key-dangerous')
  }
  dependsOn: [
    keyVault
  ]
}

// Outputs land in .azure/<env>/.env; scripts/postprovision.* turns them into local.settings.json. No secrets here.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output SERVICE_API_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_APP_URL string = 'https://${functionApp.outputs.defaultHostname}'
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_STORAGE_BLOB_ENDPOINT string = blobServiceUri
output AZURE_STORAGE_QUEUE_ENDPOINT string = queueServiceUri
output AZURE_STORAGE_TABLE_ENDPOINT string = tableServiceUri
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_URI string = keyVault.outputs.uri
output AZURE_UAMI_NAME string = identity.outputs.name
output AZURE_UAMI_CLIENT_ID string = identity.outputs.clientId
output AZURE_UAMI_PRINCIPAL_ID string = identity.outputs.principalId
output AZURE_UAMI_RESOURCE_ID string = identity.outputs.resourceId
// Named after the app settings they feed, so a later `azd provision` reads the same values back.
output CTCS_HOSTING_CLOUD string = hostingCloud
output SYNC_SCHEDULE string = syncSchedule
output CTCS_PAIRS_TABLE string = pairsTableName
output CTCS_PAIR_STATE_TABLE string = pairStateTableName
output CTCS_CONTACT_STATE_TABLE string = contactStateTableName
output CTCS_RUNS_TABLE string = runsTableName
output CTCS_GROUPS_TABLE string = groupsTableName
output CTCS_TARGETS_TABLE string = targetsTableName
output CTCS_OPS_QUEUE string = opsQueueName
output CTCS_PAIR_RUNS_QUEUE string = pairRunsQueueName
output CTCS_PLANNER_BUDGET_SECONDS string = string(plannerBudgetSeconds)
output CTCS_LEASE_SECONDS string = string(leaseSeconds)
output CTCS_CHANGE_NOTIFICATIONS string = changeNotifications
output CTCS_NOTIFICATION_URL string = notificationUrl
output CTCS_NOTIFICATION_DELAY_SECONDS string = string(notificationDelaySeconds)
output CTCS_EXCHANGE_MAX_CONCURRENCY string = string(exchangeMaxConcurrency)
output CTCS_LOOKUP_BATCH string = string(lookupBatch)
output CTCS_QUOTA_BACKOFF_SECONDS string = quotaBackoffSeconds
