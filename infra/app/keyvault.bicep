// Key Vault for the secret references of pair files (`kv:<name>`): certificates and Graph client secrets.
// RBAC mode: the app's identity reads with Key Vault Secrets User, the admin writes with the officer roles (rbac.bicep).
param name string
param location string = resourceGroup().location
param tags object = {}

@description('Purge protection: recommended in production, but irreversible, and it stops `azd down --purge` from purging the vault.')
param purgeProtection bool = false

module vault 'br/public:avm/res/key-vault/vault:0.13.3' = {
  name: 'key-vault'
  params: {
    name: name
    location: location
    tags: tags
    sku: 'standard'
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    enablePurgeProtection: purgeProtection
    enableVaultForDeployment: false
    enableVaultForTemplateDeployment: false
    enableVaultForDiskEncryption: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

output name string = vault.outputs.name
output resourceId string = vault.outputs.resourceId
output uri string = vault.outputs.uri
