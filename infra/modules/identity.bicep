// The one user-assigned identity of credvault's data access: the function
// app runs as it (AZURE_CLIENT_ID), the Functions host reaches its storage and
// Application Insights with it, and the ciphertext account unwraps its
// at-rest key with it. Each role it holds is assigned in the module of the
// resource it applies to, at the narrowest scope that works.
param name string
param location string
param tags object

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2024-11-30' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
