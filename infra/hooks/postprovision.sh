#!/usr/bin/env bash
# azd postprovision hook: the web console's sign-in (App Service Authentication with Microsoft
# Entra ID, infra/app/auth.bicep). Creates or updates the console's Entra app registration:
#   - a web redirect URI https://<app>/.auth/login/aad/callback, ID tokens, identifier api://<appId>;
#   - the app role Exporter.Admin (console-app-roles.json: users, a fixed id), which the app
#     requires (CONSOLE_ROLE in function.bicep), and "assignment required" on its service
#     principal, so only those given the role can sign in at all;
#   - no client secret: a federated identity credential trusts the function app's user-assigned
#     identity, whose client id the app setting OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID holds;
# gives the role to whoever runs it (CONSOLE_ASSIGN_DEPLOYER=false: not), stores the client id
# in the azd environment (AZURE_CONSOLE_CLIENT_ID, which the next `azd provision` passes to
# main.bicep) and applies auth.bicep with it now, so a first `azd up` ends with a console that
# signs in. Idempotent: run it again with `azd hooks run postprovision`. Needs the Azure CLI,
# signed in as someone who may create app registrations. CONSOLE_APP_REGISTRATION=manual: the
# registration is managed by hand (README), and this hook leaves Entra ID alone.
set -euo pipefail

: "${AZURE_SUBSCRIPTION_ID:?run this through azd (azd up, azd provision, azd hooks run postprovision)}"
: "${AZURE_TENANT_ID:?run azd provision first}"
: "${AZURE_RESOURCE_GROUP:?run azd provision first}"
: "${AZURE_FUNCTION_APP_NAME:?run azd provision first}"
: "${AZURE_FUNCTION_APP_URL:?run azd provision first}"
: "${AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID:?run azd provision first}"

hooks_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
roles_file="$hooks_dir/console-app-roles.json"
auth_template="$hooks_dir/../app/auth.bicep"
role_value="Exporter.Admin" # the role console-app-roles.json defines; CONSOLE_ROLE in function.bicep
credential_name="exporter-function-identity"
display_name="Exporter console ($AZURE_FUNCTION_APP_NAME)"
app_url="${AZURE_FUNCTION_APP_URL%/}"
previous_client_id="${AZURE_CONSOLE_CLIENT_ID:-}"

closed() {
    echo "error: $*" >&2
    echo "The console stays closed (the platform answers 401); the JSON API and the blob" \
        "trigger work as before. Fix the cause and run: azd hooks run postprovision (or" \
        "register the app by hand: README, Deploy to Azure, The console)." >&2
    exit 1
}
trap 'closed "registering the console with Entra ID failed (see above)"' ERR

if [ "${CONSOLE_APP_REGISTRATION:-azd}" = manual ]; then
    echo "CONSOLE_APP_REGISTRATION=manual: the console's app registration is managed by hand" \
        "(AZURE_CONSOLE_CLIENT_ID=${previous_client_id:-<not set: the console stays closed>})."
    exit 0
fi
if ! command -v az >/dev/null 2>&1; then
    closed "the Azure CLI (az) registers the console with Entra ID: install it, run az login"
fi

authority=$(az cloud show --query endpoints.activeDirectory --output tsv)
graph=$(az cloud show --query endpoints.microsoftGraphResourceId --output tsv)
graph="${graph%/}/v1.0"

echo "The console's Entra app registration: $display_name"
app_id="$previous_client_id"
if [ -n "$app_id" ] && [ -z "$(az ad app show --id "$app_id" --query appId --output tsv 2>/dev/null)" ]; then
    echo "warning: AZURE_CONSOLE_CLIENT_ID=$app_id is no app registration of this tenant;" \
        "looking it up by name" >&2
    app_id=""
fi
if [ -z "$app_id" ]; then
    app_id=$(az ad app list --display-name "$display_name" \
        --query "[?displayName=='$display_name'].appId | [0]" --output tsv)
fi
if [ -z "$app_id" ]; then
    app_id=$(az ad app create --display-name "$display_name" --sign-in-audience AzureADMyOrg \
        --query appId --output tsv)
    echo "  created (client id $app_id)"
fi

az ad app update --id "$app_id" --only-show-errors \
    --web-redirect-uris "$app_url/.auth/login/aad/callback" \
    --enable-id-token-issuance true \
    --identifier-uris "api://$app_id" \
    --app-roles "@$roles_file"
role_id=$(az ad app show --id "$app_id" \
    --query "appRoles[?value=='$role_value'].id | [0]" --output tsv)
[ -n "$role_id" ] || closed "the registration has no app role $role_value after the update"

sp_id=$(az ad sp show --id "$app_id" --query id --output tsv 2>/dev/null || true)
if [ -z "$sp_id" ]; then
    sp_id=$(az ad sp create --id "$app_id" --query id --output tsv)
fi
az ad sp update --id "$app_id" --set appRoleAssignmentRequired=true --only-show-errors

# The sign-in's client credential: the function app's identity, not a secret.
credential=$(printf '{"name": "%s", "issuer": "%s/%s/v2.0", "subject": "%s", "audiences": ["api://AzureADTokenExchange"], "description": "App Service Authentication of %s signs in with its user-assigned identity"}' \
    "$credential_name" "${authority%/}" "$AZURE_TENANT_ID" \
    "$AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID" "$AZURE_FUNCTION_APP_NAME")
subject=$(az ad app federated-credential list --id "$app_id" \
    --query "[?name=='$credential_name'].subject | [0]" --output tsv)
if [ -z "$subject" ]; then
    az ad app federated-credential create --id "$app_id" --parameters "$credential" \
        --only-show-errors --output none
elif [ "$subject" != "$AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID" ]; then
    az ad app federated-credential update --id "$app_id" \
        --federated-credential-id "$credential_name" --parameters "$credential" \
        --only-show-errors --output none
fi

if [ "$previous_client_id" != "$app_id" ]; then
    if command -v azd >/dev/null 2>&1; then
        azd env set AZURE_CONSOLE_CLIENT_ID "$app_id"
    else
        echo "Run: azd env set AZURE_CONSOLE_CLIENT_ID $app_id (so azd provision keeps it)"
    fi
    echo "Turning on the sign-in with the new registration..."
    az deployment group create --only-show-errors --output none \
        --subscription "$AZURE_SUBSCRIPTION_ID" \
        --resource-group "$AZURE_RESOURCE_GROUP" \
        --name console-auth \
        --template-file "$auth_template" \
        --parameters functionAppName="$AZURE_FUNCTION_APP_NAME" clientId="$app_id"
fi

# Whoever deploys may use the console (as they hold Key Vault Secrets Officer on the vault).
# Not for a service principal (the role is for users), and never fatal: the output says how.
assign_deployer() {
    local me held
    me=$(az ad signed-in-user show --query id --output tsv 2>/dev/null) || return 0
    [ -n "$me" ] || return 0
    held=$(az rest --method GET \
        --uri "$graph/users/$me/appRoleAssignments?\$filter=resourceId%20eq%20$sp_id" \
        --query "value[?appRoleId=='$role_id'].id | [0]" --output tsv) || return 1
    if [ -z "$held" ]; then
        az rest --method POST --uri "$graph/servicePrincipals/$sp_id/appRoleAssignedTo" \
            --headers Content-Type=application/json --output none \
            --body "{\"principalId\": \"$me\", \"resourceId\": \"$sp_id\", \"appRoleId\": \"$role_id\"}" ||
            return 1
        echo "  gave you the app role $role_value"
    fi
}

trap - ERR
if [ "${CONSOLE_ASSIGN_DEPLOYER:-true}" = true ] && ! assign_deployer; then
    echo "warning: could not give you the app role $role_value: assign it as below" >&2
fi
cat <<EOF
Done: the console is $app_url/api/console/ (sign in with Entra ID; the app role $role_value is
required). To give someone the role: Entra admin center > Enterprise applications >
$display_name > Users and groups > Add user/group, role $role_value; or
  az rest --method POST --uri $graph/servicePrincipals/$sp_id/appRoleAssignedTo \\
    --body '{"principalId": "<user object id>", "resourceId": "$sp_id", "appRoleId": "$role_id"}'
(a user's object id: az ad user show --id someone@example.com --query id --output tsv)
EOF
