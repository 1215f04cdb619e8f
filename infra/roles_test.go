package infra

import (
	"fmt"
	"strings"
	"testing"
)

// Built-in role definition ids, as Microsoft's "Azure built-in roles"
// reference lists them.
const (
	keyVaultCryptoServiceEncryptionUser = "e147488a-f6f5-4113-8e2d-b22465e65bf6"
	storageBlobDataContributor          = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
	storageBlobDataOwner                = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
	storageTableDataContributor         = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
	monitoringMetricsPublisher          = "3913510d-42f4-4e42-8a64-420c390055eb"
	// A data-plane role of Cosmos DB for NoSQL, not an Azure RBAC role.
	cosmosBuiltInDataContributor = "00000000-0000-0000-0000-000000000002"
)

// roleAssignment is one Azure RBAC assignment to the identity: its role and
// the type of the one resource it is scoped to.
type roleAssignment struct {
	file, name, role, roleName, scopeType string
}

// The identity's every Azure RBAC role, each at the narrowest scope that
// works. Any other role assignment in the Bicep fails the test.
var wantRoles = []roleAssignment{
	{"modules/keyvault.bicep", "cryptoUser", keyVaultCryptoServiceEncryptionUser,
		"Key Vault Crypto Service Encryption User", "Microsoft.KeyVault/vaults/keys"},
	{"modules/storage.bicep", "ciphertextContributor", storageBlobDataContributor,
		"Storage Blob Data Contributor", "Microsoft.Storage/storageAccounts/blobServices/containers"},
	{"modules/storage.bicep", "auditContributor", storageBlobDataContributor,
		"Storage Blob Data Contributor", "Microsoft.Storage/storageAccounts/blobServices/containers"},
	{"modules/hoststorage.bicep", "blobOwner", storageBlobDataOwner,
		"Storage Blob Data Owner", "Microsoft.Storage/storageAccounts"},
	{"modules/hoststorage.bicep", "tableContributor", storageTableDataContributor,
		"Storage Table Data Contributor", "Microsoft.Storage/storageAccounts"},
	{"modules/monitoring.bicep", "metricsPublisher", monitoringMetricsPublisher,
		"Monitoring Metrics Publisher", "Microsoft.Insights/components"},
}

func TestRoleAssignmentsAreTheListedOnes(t *testing.T) {
	want := map[string]bool{}
	for _, r := range wantRoles {
		want[r.file+" "+r.name] = true
	}
	for path, f := range files(t) {
		for _, d := range f.resourcesOf("Microsoft.Authorization/roleAssignments") {
			if !want[path+" "+d.name] {
				t.Errorf("%s:%d: role assignment %s is not one of the identity's listed roles", path, d.line, d.name)
			}
		}
	}
}

func TestRoleAssignments(t *testing.T) {
	for _, r := range wantRoles {
		t.Run(r.name, func(t *testing.T) {
			d := resource(t, r.file, r.name)
			if d.cond != "" {
				t.Errorf("%s is conditional (%s); every role is needed", r.name, d.cond)
			}
			wantDef := fmt.Sprintf("subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '%s')", r.role)
			def, _ := get(d.body, "properties.roleDefinitionId")
			if got := render(def); got != wantDef {
				t.Errorf("roleDefinitionId = %s, want %s (%s)", got, wantDef, r.roleName)
			}
			name, _ := get(d.body, "name")
			if got := render(name); !strings.HasPrefix(got, "guid(") || !strings.Contains(got, "identityPrincipalId") || !strings.Contains(got, r.role) {
				t.Errorf("name = %s, want guid(scope, principal, role id): stable across deployments", got)
			}
			runChecks(t, []check{
				{r.file, r.name, "properties.principalId", "identityPrincipalId"},
				{r.file, r.name, "properties.principalType", "'ServicePrincipal'"},
			})
			scope, _ := get(d.body, "scope")
			target := file(t, r.file).decl("resource", render(scope))
			switch {
			case target == nil:
				t.Errorf("scope = %s, want a resource of this file (no resource group or subscription scope)", render(scope))
			case target.resourceType() != r.scopeType:
				t.Errorf("scope %s is a %s, want the %s alone", render(scope), target.resourceType(), r.scopeType)
			}
		})
	}
}

// The Cosmos DB data-plane role: Built-in Data Contributor on the database.
func TestCosmosDataPlaneRole(t *testing.T) {
	const cos = "modules/cosmos.bicep"
	var found []*decl
	for path, f := range files(t) {
		for _, d := range f.resourcesOf("Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments") {
			if path != cos || d.name != "dataContributor" {
				t.Errorf("%s:%d: Cosmos DB role assignment %s is not the listed one", path, d.line, d.name)
			}
			found = append(found, d)
		}
	}
	if len(found) != 1 {
		t.Fatalf("found %d Cosmos DB role assignments, want 1", len(found))
	}
	runChecks(t, []check{
		{cos, "dataContributor", "parent", "account"},
		{cos, "dataContributor", "properties.roleDefinitionId", "'${account.id}/sqlRoleDefinitions/" + cosmosBuiltInDataContributor + "'"},
		{cos, "dataContributor", "properties.principalId", "identityPrincipalId"},
		{cos, "dataContributor", "properties.scope", "'${account.id}/dbs/${database.name}'"},
	})
}
