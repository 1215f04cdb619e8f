// The function app on Flex Consumption: runtime `custom` 1.0 (the Go handler
// behind the Functions host), deployed from a blob container through the
// identity, every setting the binary reads, Easy Auth in front, CORS on the
// platform.
//
// Flex deprecates FUNCTIONS_WORKER_RUNTIME, FUNCTIONS_EXTENSION_VERSION,
// WEBSITE_RUN_FROM_PACKAGE and the content-share settings: none is set here.
// Flex gives the host 30 s to start and has no time-zone setting: the timer
// schedule is UTC, and the handler listens before it touches any backend.
param planName string
param siteName string
param location string
param tags object
param instanceMemoryMB int
param maximumInstanceCount int
param identityId string
param identityClientId string
param hostStorageName string
param deploymentContainerName string
param appInsightsName string
param keyVaultUri string
param keyName string
param blobAccountUrl string
param ciphertextContainer string
param auditContainer string
param cosmosEndpoint string
param cosmosDatabase string
param cosmosContainer string
param tenantId string
param entraTenants string
param entraAudiences string
param entraRoleMap string
param apiClientId string
param apiIdentifierUri string
param corsAllowedOrigins array
param easyAuthEnabled bool
param auditMode string
param rotationSchedule string
param logLevel string

resource hostStorage 'Microsoft.Storage/storageAccounts@2025-01-01' existing = {
  name: hostStorageName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-11-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-11-01' = {
  name: siteName
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${hostStorage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'custom'
        version: '1.0'
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      // The frontend's origins (DESIGN §4). In Azure the platform answers
      // CORS; the handler's own CORS setting stays unset.
      cors: {
        allowedOrigins: corsAllowedOrigins
        supportCredentials: false
      }
      appSettings: [
        // The Functions host: its storage through the identity, no
        // connection string (timer locks, keys, diagnostic events).
        { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
        { name: 'AzureWebJobsStorage__clientId', value: identityClientId }
        { name: 'AzureWebJobsStorage__blobServiceUri', value: hostStorage.properties.primaryEndpoints.blob }
        { name: 'AzureWebJobsStorage__tableServiceUri', value: hostStorage.properties.primaryEndpoints.table }

        // Telemetry, host and handler alike: Application Insights with
        // local auth off takes only Entra-authenticated ingestion.
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: appInsights.properties.ConnectionString }
        { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'Authorization=AAD;ClientId=${identityClientId}' }
        { name: 'CREDVAULT_METRICS_INTERVAL', value: '1m' }

        // The identity every Azure SDK client of the handler uses.
        { name: 'AZURE_CLIENT_ID', value: identityClientId }

        // Callers: Entra access tokens, verified by the handler itself.
        { name: 'CREDVAULT_AUTH_MODE', value: 'entra' }
        { name: 'CREDVAULT_ENTRA_AUTHORITY', value: environment().authentication.loginEndpoint }
        { name: 'CREDVAULT_ENTRA_TENANTS', value: entraTenants }
        { name: 'CREDVAULT_ENTRA_AUDIENCES', value: entraAudiences }
        { name: 'CREDVAULT_ENTRA_ROLE_MAP', value: entraRoleMap }
        { name: 'CREDVAULT_LISTEN_HOST', value: '127.0.0.1' }

        // Keys: the CMK in Key Vault, 16 domains (recorded at first start).
        { name: 'CREDVAULT_KEYVAULT_URL', value: keyVaultUri }
        { name: 'CREDVAULT_KEY_NAME', value: keyName }
        { name: 'CREDVAULT_KEY_DOMAINS', value: '16' }
        { name: 'CREDVAULT_KEY_CACHE_TTL', value: '10m' }
        { name: 'CREDVAULT_KEY_GRACE', value: '24h' }

        // Stores: ciphertext and audit trail in Blob Storage, metadata in
        // Cosmos DB; the infrastructure creates the containers.
        { name: 'CREDVAULT_BLOB_ACCOUNT_URL', value: blobAccountUrl }
        { name: 'CREDVAULT_BLOB_CONTAINER', value: ciphertextContainer }
        { name: 'CREDVAULT_AUDIT_CONTAINER', value: auditContainer }
        { name: 'CREDVAULT_AUDIT_MODE', value: auditMode }
        { name: 'CREDVAULT_COSMOS_ENDPOINT', value: cosmosEndpoint }
        { name: 'CREDVAULT_COSMOS_DATABASE', value: cosmosDatabase }
        { name: 'CREDVAULT_COSMOS_CONTAINER', value: cosmosContainer }
        { name: 'CREDVAULT_CREATE_CONTAINERS', value: 'false' }
        { name: 'CREDVAULT_MAX_VERSIONS', value: '25' }

        // Rotation: the host fires the rotate timer (its function.json names
        // %CREDVAULT_ROTATION_SCHEDULE%), so the handler runs no timer.
        { name: 'CREDVAULT_ROTATION_SCHEDULE', value: rotationSchedule }
        { name: 'CREDVAULT_RUN_TIMER', value: 'false' }
        { name: 'CREDVAULT_DOMAIN_KEY_MAX_AGE', value: '2160h' }
        { name: 'CREDVAULT_KEK_MAX_AGE', value: '8760h' }
        { name: 'CREDVAULT_GARBAGE_GRACE', value: '24h' }
        { name: 'CREDVAULT_ROTATION_BUDGET', value: '8m' }

        { name: 'CREDVAULT_LOG_LEVEL', value: logLevel }
      ]
    }
  }
}

// No FTP and no basic-auth publishing: deployments authenticate with Entra.
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-11-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-11-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

// Easy Auth: Microsoft Entra tokens for the API's audiences are required,
// anonymous callers get 401, health and the OpenAPI document stay open. It
// checks tokens of the home tenant's issuer; with callers from other tenants
// turn it off (easyAuthEnabled) and rely on the handler's own verification,
// which is always on (DESIGN §3).
resource auth 'Microsoft.Web/sites/config@2024-11-01' = {
  parent: site
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: easyAuthEnabled
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
      excludedPaths: [
        '/api/health'
        '/api/openapi.json'
      ]
    }
    httpSettings: {
      requireHttps: true
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: apiClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            apiClientId
            apiIdentifierUri
          ]
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
  }
}

output siteName string = site.name
output uri string = 'https://${site.properties.defaultHostName}'
