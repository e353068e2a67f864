// Feeds the blob trigger: BlobCreated events under segments/ go to the Functions host's blob
// extension webhook, as Flex Consumption requires (no container polling there).
//
// Deployed by the postdeploy hook (azure.yaml, infra/hooks/postdeploy.sh), not by main.bicep:
// the webhook's `blobs_extension` system key exists only once the code with the Event Grid blob
// trigger runs, and Event Grid validates the endpoint when the subscription is created.
param functionAppName string
param systemTopicName string
param storageAccountName string
param deadLetterContainerName string

// The blob-triggered function (exporter/functions/snapshots.py) and the container it watches.
var functionName = 'snapshot_arrived'
var container = 'segments'

resource app 'Microsoft.Web/sites@2023-12-01' existing = {
  name: functionAppName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: systemTopicName
}

var blobsExtensionKey = listKeys('${app.id}/host/default', '2023-12-01').systemKeys.blobs_extension

resource snapshotsArrive 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: systemTopic
  name: 'segments-to-snapshot-arrived'
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: 'https://${app.properties.defaultHostName}/runtime/webhooks/blobs?functionName=Host.Functions.${functionName}&code=${blobsExtensionKey}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
      ]
      subjectBeginsWith: '/blobServices/default/containers/${container}/'
    }
    // Event Grid retries for a day (the app may be scaling from zero or redeploying), then
    // keeps the event in the dead-letter container rather than dropping it.
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storage.id
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}
