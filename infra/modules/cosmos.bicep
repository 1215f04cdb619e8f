// Cosmos DB for NoSQL holding the metadata and the keyrings: serverless by
// default, local (key) authentication off, TLS 1.2, one database and one
// container partitioned on /pk (the owner hash; the key domains have a
// partition of their own). Strong consistency in the one region: the adapter
// relies on reading its own writes. The identity holds the built-in Data
// Contributor data-plane role on this database only.
param name string
param location string
param tags object
param serverless bool
param autoscaleMaxThroughput int
param backupRetentionHours int
param identityPrincipalId string

@description('CREDVAULT_COSMOS_DATABASE')
param databaseName string = 'credvault'
@description('CREDVAULT_COSMOS_CONTAINER')
param containerName string = 'metadata'

resource account 'Microsoft.DocumentDB/databaseAccounts@2025-04-15' = {
  name: name
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    locations: [
      {
        locationName: location
        failoverPriority: 0
        isZoneRedundant: false
      }
    ]
    consistencyPolicy: {
      defaultConsistencyLevel: 'Strong'
    }
    capabilities: serverless ? [
      {
        name: 'EnableServerless'
      }
    ] : []
    disableLocalAuth: true
    disableKeyBasedMetadataWriteAccess: true
    minimalTlsVersion: 'Tls12'
    publicNetworkAccess: 'Enabled'
    // Backups keep keyrings: an erased owner can be restored from a backup
    // for backupRetentionHours (docs/keys.md, crypto-shredding).
    backupPolicy: {
      type: 'Periodic'
      periodicModeProperties: {
        backupIntervalInMinutes: 240
        backupRetentionIntervalInHours: backupRetentionHours
        backupStorageRedundancy: 'Geo'
      }
    }
  }
}

resource database 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2025-04-15' = {
  parent: account
  name: databaseName
  properties: {
    resource: {
      id: databaseName
    }
  }
}

resource container 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2025-04-15' = {
  parent: database
  name: containerName
  properties: {
    resource: {
      id: containerName
      partitionKey: {
        paths: [
          '/pk'
        ]
        kind: 'Hash'
        version: 2
      }
    }
    options: serverless ? {} : {
      autoscaleSettings: {
        maxThroughput: autoscaleMaxThroughput
      }
    }
  }
}

// Cosmos DB Built-in Data Contributor (a data-plane role of the account, not
// an Azure RBAC role): read and write items, query, read the container's
// metadata, in this database only. It grants nothing on the control plane:
// the identity cannot create, delete or resize databases and containers.
resource dataContributor 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2025-04-15' = {
  parent: account
  name: guid(database.id, identityPrincipalId, '00000000-0000-0000-0000-000000000002')
  properties: {
    roleDefinitionId: '${account.id}/sqlRoleDefinitions/00000000-0000-0000-0000-000000000002'
    principalId: identityPrincipalId
    scope: '${account.id}/dbs/${database.name}'
  }
}

output endpoint string = account.properties.documentEndpoint
output databaseName string = database.name
output containerName string = container.name
