// The function keys by role (sync/api/keys.py), as host keys of the Function App:
//   ctcs-read       status and definitions (GET /api/pairs...)
//   ctcs-operate    + resync, reconcile, connection test, provisioning one user
//   ctcs-dangerous  + allow_deletes=true (releasing a quarantine, removals during one)
// Each key's value is a Key Vault secret (ctcs-key-read, ctcs-key-operate, ctcs-key-dangerous) the admin stores once
// (docs/deploy.md). main.bicep reads them with getSecret() into the @secure() parameters below, so no value is in
// a template, a parameters file or the deployment history; the app reads the same secrets through Key Vault
// references in its settings (CTCS_KEY_READ, CTCS_KEY_OPERATE, CTCS_KEY_DANGEROUS) and so knows which role a key is.
param functionAppName string

@secure()
@description('Value of ctcs-read: from the Key Vault secret ctcs-key-read (getSecret in main.bicep).')
param readKeyValue string

@secure()
@description('Value of ctcs-operate: from the Key Vault secret ctcs-key-operate (getSecret in main.bicep).')
param operateKeyValue string

@secure()
@description('Value of ctcs-dangerous: from the Key Vault secret ctcs-key-dangerous (getSecret in main.bicep).')
param dangerousKeyValue string

resource readKey 'Microsoft.Web/sites/host/functionKeys@2023-12-01' = {
  name: '${functionAppName}/default/ctcs-read'
  properties: {
    name: 'ctcs-read'
    value: readKeyValue
  }
}

resource operateKey 'Microsoft.Web/sites/host/functionKeys@2023-12-01' = {
  name: '${functionAppName}/default/ctcs-operate'
  properties: {
    name: 'ctcs-operate'
    value: operateKeyValue
  }
}

resource dangerousKey 'Microsoft.Web/sites/host/functionKeys@2023-12-01' = {
  name: '${functionAppName}/default/ctcs-dangerous'
  properties: {
    name: 'ctcs-dangerous'
    value: dangerousKeyValue
  }
}
