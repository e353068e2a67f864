// The Functions app on the Flex Consumption plan (Linux, Python 3.11), running as the
// user-assigned identity: storage, Key Vault and Application Insights are all reached with it,
// so no app setting holds a key or a connection string with a secret.
param name string
param planName string
param location string
param tags object

@description('Resource id of the user-assigned identity the app runs as.')
param identityId string

@description('Client id of that identity (what the SDKs and the host need to pick it).')
param identityClientId string

param storageAccountName string
param deploymentContainerName string
param applicationInsightsConnectionString string
param keyVaultUri string
param refreshSchedule string
param rejectReportRetentionDays int
param sendgridApiBaseUrl string
param instanceMemoryMB int
param maximumInstanceCount int

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource plan 'Microsoft.Web/serverfarms@2023-12-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  //checkov:skip=CKV_AZURE_225:Not every Flex Consumption region has availability zones, and the pipeline keeps its work in storage queues: a zone outage delays runs but loses none. Opt in per environment where zones exist.
  properties: {
    reserved: true // Linux
    zoneRedundant: false
  }
}

resource app 'Microsoft.Web/sites@2023-12-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'exporter' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  //checkov:skip=CKV_AZURE_17:HTTP API callers authenticate with function keys, Event Grid's webhook deliveries with the blobs_extension key and console users with Entra ID sign-in; none can present a client certificate.
  //checkov:skip=CKV_AZURE_222:The blob trigger is fed by Event Grid webhooks, the HTTP API is called and the console opened from outside Azure, so the app needs its public endpoint; every API route needs a key and the console's routes sit behind App Service Authentication (auth.bicep), checking the signed-in principal and its app role themselves.
  //checkov:skip=CKV_AZURE_212:Flex Consumption scales instances by demand (down to zero); there is no fixed worker count to raise.
  //checkov:skip=CKV_AZURE_213:Flex Consumption does not support App Service health checks; the platform replaces unhealthy instances itself.
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
      appSettings: [
        // Host storage with the identity (exporter/storage.py and the blob SDK bindings read
        // these too); the service URIs as the Flex samples set them.
        { name: 'AzureWebJobsStorage__accountName', value: storage.name }
        { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
        { name: 'AzureWebJobsStorage__clientId', value: identityClientId }
        { name: 'AzureWebJobsStorage__blobServiceUri', value: storage.properties.primaryEndpoints.blob }
        { name: 'AzureWebJobsStorage__queueServiceUri', value: storage.properties.primaryEndpoints.queue }
        { name: 'AzureWebJobsStorage__tableServiceUri', value: storage.properties.primaryEndpoints.table }
        // Telemetry with the identity (Application Insights has local auth off).
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: applicationInsightsConnectionString }
        { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'ClientId=${identityClientId};Authorization=AAD' }
        // Destinations' API keys: read from Key Vault with DefaultAzureCredential, which
        // AZURE_CLIENT_ID points at the user-assigned identity.
        { name: 'KEY_VAULT_URI', value: keyVaultUri }
        { name: 'AZURE_CLIENT_ID', value: identityClientId }
        { name: 'SENDGRID_API_BASE_URL', value: sendgridApiBaseUrl }
        { name: 'REFRESH_SCHEDULE', value: refreshSchedule }
        { name: 'REJECT_REPORT_RETENTION_DAYS', value: string(rejectReportRetentionDays) }
        // Two malloc arenas, not eight per core: memory one worker thread frees is reused by
        // the next (1M-profile benchmark: host peak 213-251 MB with 2, 266-286 MB without).
        { name: 'MALLOC_ARENA_MAX', value: '2' }
        // The web console (/api/console/): signed in by App Service Authentication with Entra
        // ID (auth.bicep), then the app requires this app role, which the postprovision hook
        // defines on the registration (infra/hooks/console-app-roles.json).
        { name: 'CONSOLE_AUTH', value: 'entra' }
        { name: 'CONSOLE_ROLE', value: 'Exporter.Admin' }
        // The sign-in's client credential: this identity's assertion instead of a client secret
        // (auth.bicep's clientSecretSettingName; a federated credential on the registration).
        { name: 'OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID', value: identityClientId }
      ]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
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
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// No FTP and no basic-auth (publishing profile) deployments: azd deploys with Entra ID.
resource noFtpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2023-12-01' = {
  parent: app
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource noScmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2023-12-01' = {
  parent: app
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = app.name
output url string = 'https://${app.properties.defaultHostName}'
