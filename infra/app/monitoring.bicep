// Log Analytics + Application Insights. With `entraAuth` (the default in the global cloud) local (instrumentation key)
// auth is off: the app sends telemetry with its managed identity (APPLICATIONINSIGHTS_AUTHENTICATION_STRING) and needs
// Monitoring Metrics Publisher (rbac.bicep). Sovereign clouds: the Functions host cannot authenticate telemetry with
// Entra there, so local auth stays on rather than losing every trace.
param logAnalyticsName string
param applicationInsightsName string
param location string = resourceGroup().location
param tags object = {}

@description('Accept only Entra-authenticated telemetry (local auth off).')
param entraAuth bool = true

@minValue(30)
@description('Days Log Analytics keeps the logs.')
param retentionInDays int = 30

module logAnalytics 'br/public:avm/res/operational-insights/workspace:0.7.0' = {
  name: 'log-analytics'
  params: {
    name: logAnalyticsName
    location: location
    tags: tags
    dataRetention: retentionInDays
  }
}

module applicationInsights 'br/public:avm/res/insights/component:0.4.1' = {
  name: 'application-insights'
  params: {
    name: applicationInsightsName
    location: location
    tags: tags
    workspaceResourceId: logAnalytics.outputs.resourceId
    disableLocalAuth: entraAuth
  }
}

output applicationInsightsName string = applicationInsights.outputs.name
output applicationInsightsResourceId string = applicationInsights.outputs.resourceId
output logAnalyticsResourceId string = logAnalytics.outputs.resourceId
