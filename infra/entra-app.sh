#!/bin/sh
# Creates, or brings up to date, the Microsoft Entra app registration of the
# credvault API: the six app roles and the three delegated scopes of
# infra/entra-app.json, v2 access tokens, the identifier URI api://<client id>,
# and its service principal. Prints the client id. Running it again changes
# nothing that is already right (the role and scope ids are fixed).
#
#   sh infra/entra-app.sh [display-name]   # default: credvault-api
#   sh infra/entra-app.sh --azd            # azd's preprovision hook: sets
#                                          # CREDVAULT_API_CLIENT_ID once
#
# Needs the Azure CLI signed in (az login) as someone allowed to register
# applications in the tenant. It creates no secret: credvault's API only
# validates tokens, it never signs in itself.
set -eu

here=$(cd "$(dirname "$0")" && pwd)

azd_mode=false
if [ "${1:-}" = "--azd" ]; then
	azd_mode=true
	if [ -n "${CREDVAULT_API_CLIENT_ID:-}" ]; then
		echo "credvault API app registration: $CREDVAULT_API_CLIENT_ID (CREDVAULT_API_CLIENT_ID)" >&2
		exit 0
	fi
	name="credvault-api-${AZURE_ENV_NAME:-dev}"
else
	name=${1:-credvault-api}
fi

app_id=$(az ad app list --filter "displayName eq '$name'" --query '[0].appId' -o tsv)
if [ -z "$app_id" ]; then
	app_id=$(az ad app create --display-name "$name" --sign-in-audience AzureADMyOrg --query appId -o tsv)
	echo "created app registration $name: $app_id" >&2
fi
object_id=$(az ad app show --id "$app_id" --query id -o tsv)

body=$(mktemp)
trap 'rm -f "$body"' EXIT
sed "s/__CLIENT_ID__/$app_id/" "$here/entra-app.json" >"$body"
graph=$(az cloud show --query endpoints.microsoftGraphResourceId -o tsv)
az rest --method PATCH --uri "${graph%/}/v1.0/applications/$object_id" \
	--headers 'Content-Type=application/json' --body "@$body" >/dev/null

if ! az ad sp show --id "$app_id" --query id -o tsv >/dev/null 2>&1; then
	az ad sp create --id "$app_id" --query id -o tsv >/dev/null
fi

if $azd_mode; then
	azd env set CREDVAULT_API_CLIENT_ID "$app_id"
fi
echo "$app_id"
