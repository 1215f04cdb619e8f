// Log Analytics (Key Vault audit events, storage logs, telemetry) and
// Application Insights on it, both with local authentication off: telemetry
// is accepted only with an Entra token. The identity publishes to Application
// Insights and to nothing else.
param workspaceName string
param appInsightsName string
param location string
param tags object
param retentionDays int
param identityPrincipalId string

resource workspace 'Microsoft.OperationalInsights/workspaces@2025-02-01' = {
  name: workspaceName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionDays
    features: {
      disableLocalAuth: true
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    IngestionMode: 'LogAnalytics'
    DisableLocalAuth: true
  }
}

// Monitoring Metrics Publisher: posts telemetry, despite the name every kind
// of it, to this Application Insights only. Both the Functions host
// (APPLICATIONINSIGHTS_AUTHENTICATION_STRING) and credvault's own telemetry
// adapter authenticate as the identity.
resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, identityPrincipalId, '3913510d-42f4-4e42-8a64-420c390055eb')
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '3913510d-42f4-4e42-8a64-420c390055eb')
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output workspaceId string = workspace.id
output appInsightsName string = appInsights.name
