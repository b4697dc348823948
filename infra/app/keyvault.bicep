// Key Vault for the secret references of pair files (`kv:<name>`): certificates and Graph client secrets; and for the
// app's own secrets: the notification key (ctcs-notification-key) and the function keys by role (ctcs-key-read,
// ctcs-key-operate, ctcs-key-dangerous), which main.bicep reads with getSecret() for the host keys (hostkeys.bicep).
// RBAC mode: the app's identity reads with Key Vault Secrets User, the admin writes with the officer roles (rbac.bicep).
// Purge protection is always on: a deleted secret or vault can be recovered for 7 days and nobody, not even an
// owner, can purge it sooner (a deleted tenant credential is not lost to a mistake or an attacker).
param name string
param location string = resourceGroup().location
param tags object = {}

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
    enablePurgeProtection: true
    enableVaultForDeployment: false
    // getSecret() in main.bicep passes the role keys' values to hostkeys.bicep without them appearing anywhere.
    enableVaultForTemplateDeployment: true
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
