// Alert rules on Application Insights (scheduled log queries) and the action group that emails them. Deployed only
// when the azd environment sets CTCS_ALERT_EMAIL (main.bicep's alertEmail): without an address there is no one to tell.
// The queries live in queries/*.kql, next to this file; docs/operations.md explains each alert and what to do.
param namePrefix string
param location string = resourceGroup().location
param tags object = {}

@description('Resource id of the Application Insights component the rules query.')
param applicationInsightsId string

@description('Where alert emails go.')
param alertEmail string

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: '${namePrefix}-alerts'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'ctcs'
    enabled: true
    emailReceivers: [
      {
        name: 'admin'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// One rule per condition an admin must act on; each fires once per pair (the `pair` dimension), not once per op.
var rules = [
  {
    name: 'pair-quarantined'
    displayName: 'ctcs: a pair was quarantined'
    description: 'The safety gate stopped a pair (too many deletes) or its credentials failed. Nothing of the pair is applied until it is released; docs/operations.md says how.'
    severity: 1
    query: loadTextContent('./queries/pair-quarantined.kql')
    frequency: 'PT5M'
    window: 'PT15M'
  }
  {
    name: 'ops-poisoned'
    displayName: 'ctcs: operations failed every delivery'
    description: 'Operations ended in the poison queue and are kept in contact-ops-failed; fix the cause, then python -m sync replay-poison.'
    severity: 2
    query: loadTextContent('./queries/ops-poisoned.kql')
    frequency: 'PT15M'
    window: 'PT1H'
  }
  {
    name: 'pair-stale'
    displayName: 'ctcs: no successful run for two hours'
    description: 'An enabled pair has not planned successfully for two hours: its runs fail, are quarantined, or the timer stopped.'
    severity: 2
    query: loadTextContent('./queries/pair-stale.kql')
    frequency: 'PT15M'
    window: 'P1D'
  }
  {
    name: 'auth-failures'
    displayName: 'ctcs: sign-in or permission refused'
    description: 'A pair\'s certificate, secret, consent, permission or Exchange role was refused. The pair is quarantined until a connection test passes (python -m sync pairs test ID).'
    severity: 1
    query: loadTextContent('./queries/auth-failures.kql')
    frequency: 'PT5M'
    window: 'PT15M'
  }
]

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = [for rule in rules: {
  name: '${namePrefix}-${rule.name}'
  location: location
  tags: tags
  properties: {
    displayName: rule.displayName
    description: rule.description
    severity: rule.severity
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: rule.frequency
    windowSize: rule.window
    criteria: {
      allOf: [
        {
          query: rule.query
          timeAggregation: 'Count'
          dimensions: [
            {
              name: 'pair'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}]

output actionGroupId string = actionGroup.id
output ruleNames array = [for (rule, i) in rules: alertRules[i].name]
