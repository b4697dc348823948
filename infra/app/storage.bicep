// The one storage account of ctcs: the Functions host (timer locks, deployment package), the pair and state tables,
// and the operation queues. Shared keys are off, so every caller needs an Entra token and a data role (rbac.bicep).
param name string
param location string = resourceGroup().location
param tags object = {}

@description('Blob container that holds the Flex Consumption deployment package.')
param deploymentContainerName string

@description('Queues the app uses: the operation queue, its poison queue and the planner queue (pair-runs).')
param queueNames array

@description('Tables the app uses: pairs, pair state, contact state, runs, group membership.')
param tableNames array

module account 'br/public:avm/res/storage/storage-account:0.8.3' = {
  name: 'storage-account'
  params: {
    name: name
    location: location
    tags: tags
    kind: 'StorageV2'
    skuName: 'Standard_LRS'
    // Entra only: no account keys, no SAS signed with them, no anonymous blob reads.
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    dnsEndpointType: 'Standard'
    // Flex Consumption without VNet integration reaches storage over its public endpoint.
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    blobServices: {
      containers: [
        {
          name: deploymentContainerName
          publicAccess: 'None'
        }
      ]
    }
    queueServices: {
      queues: [for queueName in queueNames: {
        name: queueName
      }]
    }
    tableServices: {
      tables: [for tableName in tableNames: {
        name: tableName
      }]
    }
  }
}

output name string = account.outputs.name
output resourceId string = account.outputs.resourceId
