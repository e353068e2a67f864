// The whole deployment for `azd up`: one resource group holding the Flex Consumption function
// app, its storage account, Key Vault, monitoring and alerts, each module granting the app's
// identity only what that part needs. `make check-infra` scans every file here (pycep + checkov).
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; seeds the unique names of every resource.')
param environmentName string

@minLength(1)
@description('Azure region for every resource (one that offers the Flex Consumption plan).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the person or service principal deploying (azd sets AZURE_PRINCIPAL_ID). Gets Key Vault Secrets Officer to add SendGrid keys. Empty: no grant.')
param principalId string = ''

@description('NCRONTAB (6 fields) of the timer that re-exports the latest snapshots: app setting REFRESH_SCHEDULE.')
param refreshSchedule string = '0 0 2 * * *'

@description('Where the app talks to SendGrid: app setting SENDGRID_API_BASE_URL.')
param sendgridApiBaseUrl string = 'https://api.sendgrid.com'

@description('Days a run\'s reject report is kept (row numbers and reasons, no profile values); the app deletes older ones and a storage lifecycle rule does too.')
@minValue(1)
@maxValue(3650)
param rejectReportRetentionDays int = 30

@description('Memory of each function app instance, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Upper bound of instances the app scales out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Key Vault name override: purge protection keeps a deleted vault name reserved for 90 days.')
param keyVaultName string = ''

@description('Email addresses the alerts (failed runs, poison messages, list drift) are sent to, comma-separated: azd env ALERT_EMAILS. Empty: the alerts show in the portal only.')
param alertEmails string = ''

@description('Country code of the phone the alerts are texted to, without + (1: US/Canada, 44: UK ...): azd env ALERT_SMS_COUNTRY_CODE.')
param alertSmsCountryCode string = '1'

@description('Phone number the alerts are texted to, digits only, without the country code: azd env ALERT_SMS_PHONE. Empty: no SMS.')
param alertSmsPhoneNumber string = ''

@description('Application (client) id of the web console\'s Entra app registration: azd env AZURE_CONSOLE_CLIENT_ID, set by the postprovision hook (infra/hooks/postprovision.sh). Empty: the console stays closed (auth.bicep).')
param consoleClientId string = ''

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-exporter-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-exporter-${resourceToken}'
    applicationInsightsName: 'appi-exporter-${resourceToken}'
    location: location
    tags: tags
    appPrincipalId: identity.outputs.principalId
  }
}

// Who is told, and when: an action group and log alert rules on the workspace's AppTraces
// (failed runs, poison messages, list drift), one alert per destination.
module alerts 'app/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    location: location
    tags: tags
    logAnalyticsName: monitoring.outputs.logAnalyticsName
    actionGroupName: 'ag-exporter-${resourceToken}'
    alertsIdentityName: 'id-alerts-${resourceToken}'
    alertEmails: alertEmails
    alertSmsCountryCode: alertSmsCountryCode
    alertSmsPhoneNumber: alertSmsPhoneNumber
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'stexp${resourceToken}'
    systemTopicName: 'evgt-exporter-${resourceToken}'
    location: location
    tags: tags
    appPrincipalId: identity.outputs.principalId
    rejectReportRetentionDays: rejectReportRetentionDays
  }
}

module vault 'app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: !empty(keyVaultName) ? keyVaultName : 'kv-exp-${resourceToken}'
    location: location
    tags: tags
    appPrincipalId: identity.outputs.principalId
    operatorPrincipalId: principalId
  }
}

module functionApp 'app/function.bicep' = {
  name: 'function'
  scope: rg
  params: {
    name: 'func-exporter-${resourceToken}'
    planName: 'plan-exporter-${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: storage.outputs.deploymentContainerName
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    keyVaultUri: vault.outputs.uri
    rejectReportRetentionDays: rejectReportRetentionDays
    refreshSchedule: refreshSchedule
    sendgridApiBaseUrl: sendgridApiBaseUrl
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
  }
}

// App Service Authentication with Entra ID in front of the web console (/api/console/); the
// JSON API, Event Grid and the host's admin API keep their keys. The postprovision hook creates
// the app registration, stores its client id in the azd environment and applies this again.
module consoleAuth 'app/auth.bicep' = {
  name: 'console-auth'
  scope: rg
  params: {
    functionAppName: functionApp.outputs.name
    clientId: consoleClientId
  }
}

// azd passes these to later steps (the postprovision and postdeploy hooks) as environment variables.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_APP_URL string = functionApp.outputs.url
output AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output AZURE_CONSOLE_URL string = consoleAuth.outputs.consoleUrl
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_BLOB_EVENTS_TOPIC_NAME string = storage.outputs.systemTopicName
output AZURE_BLOB_EVENTS_DEAD_LETTER_CONTAINER string = storage.outputs.deadLetterContainerName
output AZURE_KEY_VAULT_NAME string = vault.outputs.name
output KEY_VAULT_URI string = vault.outputs.uri
output AZURE_APPLICATION_INSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output AZURE_LOG_ANALYTICS_WORKSPACE_NAME string = monitoring.outputs.logAnalyticsName
output AZURE_ALERTS_ACTION_GROUP_NAME string = alerts.outputs.actionGroupName
