// The Key Vault holding the CMK. RBAC authorization is set explicitly (API
// 2026-02-01 makes it the default for new vaults; an existing vault keeps what
// it has unless told), with purge protection and 90 days of soft delete: a
// deleted CMK cannot be purged while data under it may still need it.
//
// ARM creates only a key's first version and leaves an existing key as it is,
// so the key's creation parameters below are constant across deployments
// (nothing computed from utcNow()). New versions come from the rotation
// policy; credvault's rotate timer then rewraps the domain keys under the
// current version, and Azure Storage follows the new version by itself.
param name string
param location string
param tags object
@allowed([
  'standard'
  'premium'
])
param sku string
param rotateAfter string
param expireAfter string
param notifyBeforeExpiry string
param identityPrincipalId string
param workspaceId string

@description('Name of the CMK in the vault (CREDVAULT_KEY_NAME).')
param keyName string = 'credvault-cmk'

resource vault 'Microsoft.KeyVault/vaults@2026-02-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: sku
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

// RSA 3072 for wrapKey/unwrapKey only, in an HSM on the premium SKU.
resource cmk 'Microsoft.KeyVault/vaults/keys@2026-02-01' = {
  parent: vault
  name: keyName
  properties: {
    kty: sku == 'premium' ? 'RSA-HSM' : 'RSA'
    keySize: 3072
    keyOps: [
      'wrapKey'
      'unwrapKey'
    ]
    attributes: {
      enabled: true
    }
    rotationPolicy: {
      attributes: {
        expiryTime: expireAfter
      }
      lifetimeActions: [
        {
          trigger: {
            timeAfterCreate: rotateAfter
          }
          action: {
            type: 'rotate'
          }
        }
        {
          trigger: {
            timeBeforeExpiry: notifyBeforeExpiry
          }
          action: {
            type: 'notify'
          }
        }
      ]
    }
  }
}

// Key Vault Crypto Service Encryption User on the CMK alone: read the key's
// metadata, wrapKey, unwrapKey. credvault needs exactly that (it names the
// version it wraps with and re-reads the current one hourly), and so does
// the ciphertext account's encryption at rest.
resource cryptoUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(cmk.id, identityPrincipalId, 'e147488a-f6f5-4113-8e2d-b22465e65bf6')
  scope: cmk
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'e147488a-f6f5-4113-8e2d-b22465e65bf6')
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Every Key Vault call, by whom and with which key version, to Log Analytics.
resource vaultLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit-to-log-analytics'
  scope: vault
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        category: 'AuditEvent'
        enabled: true
      }
    ]
  }
}

// A module that takes these outputs waits for this whole module, the role
// assignment included: the ciphertext account can use the key when created.
output name string = vault.name
output vaultUri string = vault.properties.vaultUri
output keyName string = cmk.name
