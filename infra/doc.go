// Package infra holds the Bicep of credvault's Azure deployment (main.bicep
// and one module per concern under modules/), its parameters, and the script
// that registers the API in Microsoft Entra. There is no Go code to run here:
// the tests read the Bicep as a reviewer would and check what it promises
// (every setting the binary reads, the role assignments and their scopes,
// the security properties), because no Bicep compiler runs where they do.
package infra
