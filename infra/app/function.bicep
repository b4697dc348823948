// The Flex Consumption plan and the Function App. Runtime, scale limit and deployment package live in
// functionAppConfig (Flex refuses the old FUNCTIONS_WORKER_RUNTIME / FUNCTIONS_EXTENSION_VERSION app settings).
param name string
param planName string
param location string = resourceGroup().location
param tags object = {}

@description('Resource id of the user-assigned identity the app runs as.')
param identityResourceId string

@description('Client id of that identity (AzureWebJobsStorage__clientId, App Insights authentication).')
param identityClientId string

param applicationInsightsName string

@description('URL of the blob container that holds the deployment package.')
param deploymentContainerUrl string

param blobServiceUri string
param queueServiceUri string
param tableServiceUri string

@minValue(1)
@maxValue(10)
@description('Instance cap: each instance runs its own queue batch against the same Exchange tenants.')
param maximumInstanceCount int = 2

param instanceMemoryMB int = 2048

@description('Keep one instance of the HTTP functions always ready, so Graph\'s change notifications are answered within its 3 s even when the app would start cold (billed while idle: see docs/deploy.md).')
param httpAlwaysReady bool = false

@description('The ctcs app settings (names from sync/settings.py); the platform settings are added here.')
param appSettings object

@description('Authenticate telemetry with the managed identity (false in sovereign clouds: see monitoring.bicep).')
param applicationInsightsEntraAuth bool = true

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// Host storage through the managed identity: no AzureWebJobsStorage connection string exists in Azure.
var platformAppSettings = {
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: blobServiceUri
  AzureWebJobsStorage__queueServiceUri: queueServiceUri
  AzureWebJobsStorage__tableServiceUri: tableServiceUri
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
}
var telemetryAuthentication = applicationInsightsEntraAuth ? {
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
} : {}

module plan 'br/public:avm/res/web/serverfarm:0.1.1' = {
  name: 'plan'
  params: {
    name: planName
    location: location
    tags: tags
    sku: {
      name: 'FC1'
      tier: 'FlexConsumption'
    }
    reserved: true
  }
}

module site 'br/public:avm/res/web/site:0.15.1' = {
  name: 'site'
  params: {
    name: name
    kind: 'functionapp,linux'
    location: location
    tags: union(tags, {
      'azd-service-name': 'api'
    })
    serverFarmResourceId: plan.outputs.resourceId
    httpsOnly: true
    managedIdentities: {
      systemAssigned: false
      userAssignedResourceIds: [
        identityResourceId
      ]
    }
    // Key Vault references in app settings resolve with this identity, not a (missing) system-assigned one.
    keyVaultAccessIdentityResourceId: identityResourceId
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityResourceId
          }
        }
      }
      scaleAndConcurrency: {
        // Flex Consumption's always-ready group `http` covers every HTTP-triggered function, the notification
        // route among them; the queue and timer functions still scale from zero.
        alwaysReady: httpAlwaysReady ? [
          {
            name: 'http'
            instanceCount: 1
          }
        ] : []
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
    siteConfig: {
      alwaysOn: false
      minTlsVersion: '1.2'
    }
    // Deployments use Entra tokens (azd); publishing passwords stay off.
    basicPublishingCredentialsPolicies: [
      {
        name: 'ftp'
        allow: false
      }
      {
        name: 'scm'
        allow: false
      }
    ]
    appSettingsKeyValuePairs: union(appSettings, platformAppSettings, telemetryAuthentication)
  }
}

output name string = site.outputs.name
output resourceId string = site.outputs.resourceId
output defaultHostname string = site.outputs.defaultHostname
