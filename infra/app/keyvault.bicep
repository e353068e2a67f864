// The SendGrid API keys, one secret per destination (its `api_key_secret` names it). Access is
// Azure RBAC only (no access policies): the app reads secrets, the operator may write them.
param name string
param location string
param tags object

@description('Principal id of the app\'s managed identity (reads the keys).')
param appPrincipalId string

@description('Object id of the operator who adds the keys; empty for none.')
param operatorPrincipalId string = ''

var roles = {
  secretsUser: '4633458b-17de-408a-b874-0445c86b69e6' // read secret values, nothing else
  secretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7' // manage secrets, not keys or access
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  //checkov:skip=CKV_AZURE_109:The Flex Consumption app has no virtual network and no fixed outbound addresses, so an IP firewall cannot admit it; every request needs an Entra ID token and an RBAC role on this vault. VNet integration with a private endpoint is the upgrade path.
  //checkov:skip=CKV_AZURE_189:Same as CKV_AZURE_109: the app reaches the vault over its public endpoint, with Entra ID and RBAC only.
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

// Vault-wide: the secrets are added after deployment, one per destination, under names that
// are not known here.
resource appReadsSecrets 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, appPrincipalId, roles.secretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.secretsUser)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource operatorWritesSecrets 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(vault.id, operatorPrincipalId, roles.secretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.secretsOfficer)
    principalId: operatorPrincipalId
  }
}

output name string = vault.name
output uri string = vault.properties.vaultUri
