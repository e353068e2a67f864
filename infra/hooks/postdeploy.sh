#!/bin/sh
# azd postdeploy hook: subscribe the blob trigger to the storage account's blob events
# (infra/app/blob-events.bicep). It runs after the code is deployed because the webhook's key,
# the host's `blobs_extension` system key, exists only once the Event Grid blob trigger runs.
# Idempotent: a redeploy updates the subscription in place. Needs the Azure CLI, signed in.
set -eu

: "${AZURE_SUBSCRIPTION_ID:?run this through azd (azd up, azd deploy, azd hooks run postdeploy)}"
: "${AZURE_RESOURCE_GROUP:?run azd provision first}"
: "${AZURE_FUNCTION_APP_NAME:?run azd provision first}"

if ! command -v az >/dev/null 2>&1; then
    echo "error: the Azure CLI (az) subscribes the blob trigger to Event Grid: install it," \
        "run az login, then azd hooks run postdeploy" >&2
    exit 1
fi

has_key() {
    [ -n "$(az functionapp keys list --subscription "$AZURE_SUBSCRIPTION_ID" \
        --resource-group "$AZURE_RESOURCE_GROUP" --name "$AZURE_FUNCTION_APP_NAME" \
        --query systemKeys.blobs_extension --output tsv 2>/dev/null)" ]
}

echo "Waiting for the blob trigger's webhook key on $AZURE_FUNCTION_APP_NAME..."
attempt=1
until has_key; do
    if [ "$attempt" -ge 20 ]; then
        echo "error: no blobs_extension key after 10 minutes: is the code deployed and the" \
            "app running? (Application Insights shows the host's startup errors)" >&2
        exit 1
    fi
    attempt=$((attempt + 1))
    sleep 30
done

echo "Subscribing the blob trigger to blob events under segments/..."
az deployment group create --only-show-errors --output none \
    --subscription "$AZURE_SUBSCRIPTION_ID" \
    --resource-group "$AZURE_RESOURCE_GROUP" \
    --name blob-events \
    --template-file infra/app/blob-events.bicep \
    --parameters \
    functionAppName="$AZURE_FUNCTION_APP_NAME" \
    systemTopicName="$AZURE_BLOB_EVENTS_TOPIC_NAME" \
    storageAccountName="$AZURE_STORAGE_ACCOUNT_NAME" \
    deadLetterContainerName="$AZURE_BLOB_EVENTS_DEAD_LETTER_CONTAINER"
echo "Done: a snapshot dropped under segments/<segment>/ now triggers snapshot_arrived."
