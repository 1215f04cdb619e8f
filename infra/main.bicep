// credvault in Azure: one resource group holding a Flex Consumption function
// app, its user-assigned identity, the Key Vault CMK, the ciphertext and audit
// storage (encrypted at rest under that CMK), Cosmos DB for metadata, the
// Functions host's own storage, and Log Analytics with Application Insights.
// No connection string, account key or client secret appears in a setting or
// an output: every data path authenticates with the identity.
//
// Deploy with `azd up` (azure.yaml) or:
//   az deployment sub create -l <region> -f infra/main.bicep \
//     -p environmentName=<name> location=<region> apiClientId=<app registration client id>
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the environment; with the subscription and region it seeds every resource name.')
param environmentName string

@minLength(1)
@description('Region of every resource. Flex Consumption is not in every region.')
param location string

@minLength(36)
@maxLength(36)
@description('Client (application) id of the API\'s Entra app registration (infra/entra-app.sh creates it).')
param apiClientId string

@description('Application ID URI of the API, accepted as the audience of v1 tokens.')
param apiIdentifierUri string = 'api://${apiClientId}'

@description('Comma-separated ids of the tenants whose callers are accepted (CREDVAULT_ENTRA_TENANTS).')
param entraTenants string = tenant().tenantId

@description('Optional claimValue=Role mappings (CREDVAULT_ENTRA_ROLE_MAP); empty: each role\'s own name.')
param entraRoleMap string = ''

@description('Comma-separated frontend origins the platform\'s CORS allows (https://app.example.com); empty: none. The handler\'s own CORS stays off in Azure.')
param corsAllowedOrigins string = ''

@description('Turn on App Service Authentication (Easy Auth) in front of the app. credvault verifies every token itself either way.')
param easyAuthEnabled bool = true

@allowed([
  512
  2048
  4096
])
@description('Memory of each Flex Consumption instance, in MB.')
param instanceMemoryMB int = 2048

@minValue(40)
@maxValue(1000)
@description('Most instances the app scales out to.')
param maximumInstanceCount int = 40

@allowed([
  'standard'
  'premium'
])
@description('Key Vault SKU: premium keeps the CMK in an HSM (RSA-HSM).')
param keyVaultSku string = 'standard'

@description('ISO 8601 period after which Key Vault\'s rotation policy creates a new CMK version.')
param cmkRotateAfter string = 'P180D'

@description('ISO 8601 lifetime of a CMK version created by the rotation policy.')
param cmkExpireAfter string = 'P2Y'

@description('ISO 8601 period before a CMK version expires at which Key Vault notifies (Event Grid).')
param cmkNotifyBeforeExpiry string = 'P30D'

@description('Cosmos DB serverless (pay per request unit); false: provisioned autoscale throughput.')
param cosmosServerless bool = true

@minValue(1000)
@description('Autoscale maximum RU/s of the metadata container when cosmosServerless is false.')
param cosmosAutoscaleMaxThroughput int = 1000

@minValue(1)
@maxValue(8760)
@description('Hours each periodic Cosmos DB backup is kept: an erased owner\'s keyring survives this long in backups.')
param cosmosBackupRetentionHours int = 8

@minValue(0)
@maxValue(146000)
@description('Days of the audit container\'s time-based immutability policy (appends allowed); 0 leaves it off, as test deployments want.')
param auditImmutabilityDays int = 0

@minValue(1)
@maxValue(365)
@description('Days deleted blobs and containers of the ciphertext account stay recoverable.')
param blobSoftDeleteDays int = 14

@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GZRS'
])
@description('Redundancy of the ciphertext and audit account. ZRS is not in every region; LRS is.')
param ciphertextStorageSku string = 'Standard_ZRS'

@minValue(30)
@maxValue(730)
@description('Days Log Analytics keeps logs (Key Vault audit events, storage logs, telemetry).')
param logRetentionDays int = 90

@allowed([
  'closed'
  'open'
])
@description('CREDVAULT_AUDIT_MODE: closed releases nothing unless its audit record is durable.')
param auditMode string = 'closed'

@description('CREDVAULT_ROTATION_SCHEDULE: the rotate timer\'s NCRONTAB schedule, always UTC on Flex.')
param rotationSchedule string = '0 0 3 * * *'

@allowed([
  'debug'
  'info'
  'warn'
  'error'
])
@description('CREDVAULT_LOG_LEVEL')
param logLevel string = 'info'

var token = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}

resource rg 'Microsoft.Resources/resourceGroups@2024-11-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-credvault-${token}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    workspaceName: 'log-${token}'
    appInsightsName: 'appi-${token}'
    location: location
    tags: tags
    retentionDays: logRetentionDays
    identityPrincipalId: identity.outputs.principalId
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: 'kv-${token}'
    location: location
    tags: tags
    sku: keyVaultSku
    rotateAfter: cmkRotateAfter
    expireAfter: cmkExpireAfter
    notifyBeforeExpiry: cmkNotifyBeforeExpiry
    identityPrincipalId: identity.outputs.principalId
    workspaceId: monitoring.outputs.workspaceId
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'stcv${token}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityPrincipalId: identity.outputs.principalId
    keyVaultUri: keyVault.outputs.vaultUri
    keyName: keyVault.outputs.keyName
    skuName: ciphertextStorageSku
    softDeleteDays: blobSoftDeleteDays
    auditImmutabilityDays: auditImmutabilityDays
    workspaceId: monitoring.outputs.workspaceId
  }
}

module cosmos 'modules/cosmos.bicep' = {
  name: 'cosmos'
  scope: rg
  params: {
    name: 'cosmos-${token}'
    location: location
    tags: tags
    serverless: cosmosServerless
    autoscaleMaxThroughput: cosmosAutoscaleMaxThroughput
    backupRetentionHours: cosmosBackupRetentionHours
    identityPrincipalId: identity.outputs.principalId
  }
}

module hostStorage 'modules/hoststorage.bicep' = {
  name: 'hoststorage'
  scope: rg
  params: {
    name: 'stfn${token}'
    location: location
    tags: tags
    identityPrincipalId: identity.outputs.principalId
    workspaceId: monitoring.outputs.workspaceId
  }
}

module app 'modules/app.bicep' = {
  name: 'app'
  scope: rg
  params: {
    planName: 'plan-${token}'
    siteName: 'func-credvault-${token}'
    location: location
    tags: tags
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    hostStorageName: hostStorage.outputs.name
    deploymentContainerName: hostStorage.outputs.deploymentContainerName
    appInsightsName: monitoring.outputs.appInsightsName
    keyVaultUri: keyVault.outputs.vaultUri
    keyName: keyVault.outputs.keyName
    blobAccountUrl: storage.outputs.blobEndpoint
    ciphertextContainer: storage.outputs.ciphertextContainerName
    auditContainer: storage.outputs.auditContainerName
    cosmosEndpoint: cosmos.outputs.endpoint
    cosmosDatabase: cosmos.outputs.databaseName
    cosmosContainer: cosmos.outputs.containerName
    tenantId: tenant().tenantId
    entraTenants: entraTenants
    entraAudiences: '${apiClientId},${apiIdentifierUri}'
    entraRoleMap: entraRoleMap
    apiClientId: apiClientId
    apiIdentifierUri: apiIdentifierUri
    corsAllowedOrigins: empty(corsAllowedOrigins) ? [] : split(corsAllowedOrigins, ',')
    easyAuthEnabled: easyAuthEnabled
    auditMode: auditMode
    rotationSchedule: rotationSchedule
    logLevel: logLevel
  }
}

// Names and endpoints only: nothing here is a secret.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output SERVICE_API_NAME string = app.outputs.siteName
output SERVICE_API_URI string = app.outputs.uri
output CREDVAULT_API_CLIENT_ID string = apiClientId
output CREDVAULT_API_SCOPE_PREFIX string = apiIdentifierUri
output CREDVAULT_KEYVAULT_NAME string = keyVault.outputs.name
output CREDVAULT_AUDIT_ACCOUNT string = storage.outputs.name
