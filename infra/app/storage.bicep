// The app's one storage account (`AzureWebJobsStorage`, see exporter/storage.py): snapshots,
// our blobs, the pipeline's queues, the runs table, the Functions host's own state and the
// deployment package. Reached with Entra ID only: shared keys (and so SAS and connection
// strings) are disabled.
param name string
param systemTopicName string
param location string
param tags object

@description('Principal id of the app\'s managed identity.')
param appPrincipalId string

@description('Days a run\'s reject report is kept (the app setting REJECT_REPORT_RETENTION_DAYS).')
param rejectReportRetentionDays int = 30

var deploymentContainerName = 'app-package'
var deadLetterContainerName = 'eventgrid-deadletter'
var containerNames = [
  'segments' // snapshots dropped by the data platform: segments/<segment>/<file>
  'exporter' // destinations, batch claim checks, reject reports
  deploymentContainerName // Flex Consumption reads the app's package from here
]
// The pipeline's queues, each with the `-poison` queue the host moves a message to after
// maxDequeueCount failures (the app's poison handlers listen there).
var queueNames = [
  'export-requests'
  'export-requests-poison'
  'contact-batches'
  'contact-batches-poison'
  'import-jobs'
  'import-jobs-poison'
  'list-checks'
  'list-checks-poison'
  'cdm-manifests'
  'cdm-manifests-poison'
  'notifications'
  'notifications-poison'
]

var roles = {
  // Functions documents Owner for host storage (AzureWebJobsStorage) and the blob trigger's
  // receipts; beyond Contributor it only adds POSIX ACL management, which applies to
  // hierarchical-namespace accounts and so to nothing here.
  blobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  blobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  queueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  tableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
}

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  //checkov:skip=CKV_AZURE_206:Snapshots are re-delivered by the data platform on every refresh and the sync state is rebuilt by the next full run; destinations are small documents to re-create, with blob soft delete for mistakes. Geo-replication would double the cost to protect data that can be rebuilt.
  //checkov:skip=CKV_AZURE_35:The Flex Consumption app runs without a virtual network, so it reaches storage over the public endpoint; every request must carry an Entra ID token (shared keys off, no public blobs). VNet integration with private endpoints is the upgrade path.
  //checkov:skip=CKV_AZURE_59:Same as CKV_AZURE_35: public endpoint, Entra ID only; the data platform and Event Grid reach the account there too.
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    supportsHttpsTrafficOnly: true
    minimumTlsVersion: 'TLS1_2'
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [
  for containerName in containerNames: {
    parent: blobService
    name: containerName
    properties: {
      publicAccess: 'None'
    }
  }
]

// Event Grid puts the snapshot events it could not deliver here (see blob-events.bicep).
resource deadLetters 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deadLetterContainerName
  properties: {
    publicAccess: 'None'
  }
}

// Retention: a run's contact data is deleted by the app when the run ends; what stays under
// exporter/runs/ (reject reports: row numbers and reasons, no profile values) goes after
// rejectReportRetentionDays, here as in the app's own daily sweep.
resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          enabled: true
          name: 'run-reports'
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                'exporter/runs/'
              ]
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: rejectReportRetentionDays
                }
              }
            }
          }
        }
      ]
    }
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [
  for queueName in queueNames: {
    parent: queueService
    name: queueName
  }
]

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource runsTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: 'runs'
}

// The app's data roles, on the account: the Functions host keeps its own blobs (leases, keys,
// blob receipts), queues (blob trigger retries and poison) and tables (diagnostic events) next
// to ours, under names it chooses.
resource appBlobs 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, appPrincipalId, roles.blobDataOwner)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobDataOwner)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appQueues 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, appPrincipalId, roles.queueDataContributor)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.queueDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appTables 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, appPrincipalId, roles.tableDataContributor)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.tableDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Blob events of this account. Flex Consumption runs blob triggers from Event Grid only; the
// subscription to the app's webhook is declared in blob-events.bicep, deployed after the code
// (see azure.yaml), because the webhook's key exists only once the blob trigger is running.
resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: systemTopicName
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: account.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

// Event Grid writes undeliverable events into the dead-letter container, and nowhere else.
resource topicDeadLetters 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetters.id, systemTopic.id, roles.blobDataContributor)
  scope: deadLetters
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobDataContributor)
    principalId: systemTopic.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

output name string = account.name
output id string = account.id
output deploymentContainerName string = deploymentContainerName
output deadLetterContainerName string = deadLetterContainerName
output systemTopicName string = systemTopic.name
