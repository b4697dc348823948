// The ctcs workbook on Application Insights: runs per pair over time, operations by outcome, Exchange calls and
// 429s, the latency from a change being planned to its op being applied, conflicts and failures with their reasons,
// and quarantines. Its panels are in workbook.json (one KQL query each, tested offline against the logged fields).
param location string = resourceGroup().location
param tags object = {}

@description('Resource id of the Application Insights component the workbook reads.')
param applicationInsightsId string

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  // A workbook's name must be a GUID: derived from the component so a redeploy updates the same workbook.
  name: guid(applicationInsightsId, 'ctcs-sync-health')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'ctcs: sync health'
    category: 'workbook'
    sourceId: applicationInsightsId
    serializedData: loadTextContent('./workbook.json')
  }
}

output workbookId string = workbook.id
