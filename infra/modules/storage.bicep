// The ciphertext and audit storage: an account of its own, reached only with
// Entra tokens (shared-key access off), TLS 1.2, no anonymous blob access,
// and encrypted at rest twice below credvault's own envelope encryption:
// infrastructure encryption, and the service layer under the Key Vault CMK,
// which the account unwraps with the identity. No key version is named, so
// the account follows the versions the rotation policy creates.
param name string
param location string
param tags object
param identityId string
param identityPrincipalId string
param keyVaultUri string
param keyName string
param softDeleteDays int
@description('Days of the audit container\'s time-based immutability policy; 0: none.')
param auditImmutabilityDays int
param workspaceId string
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GZRS'
])
param skuName string

@description('CREDVAULT_BLOB_CONTAINER')
param ciphertextContainerName string = 'ciphertext'
@description('CREDVAULT_AUDIT_CONTAINER')
param auditContainerName string = 'audit'

resource account 'Microsoft.Storage/storageAccounts@2025-01-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
    encryption: {
      requireInfrastructureEncryption: true
      keySource: 'Microsoft.Keyvault'
      identity: {
        userAssignedIdentity: identityId
      }
      keyvaultproperties: {
        keyvaulturi: keyVaultUri
        keyname: keyName
      }
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

// Versions and soft delete: an overwritten or deleted blob, or a deleted
// container, can be brought back for softDeleteDays.
resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2025-01-01' = {
  parent: account
  name: 'default'
  properties: {
    isVersioningEnabled: true
    deleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
    }
  }
}

resource ciphertext 'Microsoft.Storage/storageAccounts/blobServices/containers@2025-01-01' = {
  parent: blobService
  name: ciphertextContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource audit 'Microsoft.Storage/storageAccounts/blobServices/containers@2025-01-01' = {
  parent: blobService
  name: auditContainerName
  properties: {
    publicAccess: 'None'
  }
}

// The audit trail is append blobs: a time-based retention policy that still
// allows appends keeps every record for auditImmutabilityDays while new ones
// are written. It is created unlocked; lock it once tested (docs/deploy.md).
resource auditImmutability 'Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies@2025-01-01' = if (auditImmutabilityDays > 0) {
  parent: audit
  name: 'default'
  properties: {
    immutabilityPeriodSinceCreationInDays: auditImmutabilityDays
    allowProtectedAppendWrites: true
  }
}

// Storage Blob Data Contributor on each of the two containers, not on the
// account: read, write, delete and list blobs there, and nowhere else.
resource ciphertextContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(ciphertext.id, identityPrincipalId, 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')
  scope: ciphertext
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource auditContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(audit.id, identityPrincipalId, 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')
  scope: audit
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Every read, write and delete of a blob, with the caller, to Log Analytics.
resource blobLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'blob-logs-to-log-analytics'
  scope: blobService
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        category: 'StorageRead'
        enabled: true
      }
      {
        category: 'StorageWrite'
        enabled: true
      }
      {
        category: 'StorageDelete'
        enabled: true
      }
    ]
  }
}

output name string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
output ciphertextContainerName string = ciphertext.name
output auditContainerName string = audit.name
