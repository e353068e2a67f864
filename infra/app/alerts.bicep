// Alerts on the app's own log lines: an action group (who is told) and three log search alert
// rules on the Log Analytics workspace of monitoring.bicep, one alert per destination.
// Each query returns one row per thing to tell of (a failed run, a poisoned message, a drifted
// run) with its TimeGenerated and dimensions; the rule counts the rows per destination.
//
// The app logs each event as one line, `<event> key=value ...` (exporter/flow/events.py):
// the Functions host sends it to Application Insights, which stores it in the workspace's
// AppTraces table, the line in `Message` (the host forwards no `extra=` fields). The queries
// read the fields back with extract(). `make check-infra` (infra/check.py) checks that every
// event, field and phrase a query matches is still logged by the code under exporter/, that
// each rule tells this action group and watches this workspace. The rules skip Azure's query
// validation at deployment: on a first deployment the workspace may not know the AppTraces
// table yet (it appears once the app's telemetry flows), which would fail `azd up`.
param location string
param tags object

@description('Name of the Log Analytics workspace (monitoring.bicep) the rules query.')
param logAnalyticsName string

param actionGroupName string

@minLength(1)
@maxLength(12)
@description('Short name of the action group: the sender named in SMS and emails (12 characters at most).')
param actionGroupShortName string = 'exporter'

@description('Name of the identity the rules query the workspace as (Log Analytics Reader there, nothing else).')
param alertsIdentityName string

@description('Email addresses told when an alert fires or resolves, comma-separated (azd env ALERT_EMAILS). Empty: none.')
param alertEmails string = ''

@description('Country code of the phone told by SMS, without + (1: US/Canada, 44: UK, 49: Germany ...).')
param alertSmsCountryCode string = '1'

@description('Phone number told by SMS, digits only, without the country code (azd env ALERT_SMS_PHONE). Empty: no SMS.')
param alertSmsPhoneNumber string = ''

var logAnalyticsReader = '73c42c96-874c-492b-b04d-ab87d138a893'
var emails = empty(trim(alertEmails)) ? [] : split(alertEmails, ',')

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: logAnalyticsName
}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: actionGroupName
  location: 'Global'
  tags: tags
  properties: {
    groupShortName: actionGroupShortName
    enabled: true
    emailReceivers: [for (email, i) in emails: {
      name: 'email-${i}'
      emailAddress: trim(email)
      useCommonAlertSchema: true
    }]
    smsReceivers: empty(alertSmsPhoneNumber) ? [] : [
      {
        name: 'sms'
        countryCode: alertSmsCountryCode
        phoneNumber: alertSmsPhoneNumber
      }
    ]
  }
}

// The rules run their queries as this identity, not as whoever deployed them last.
resource alertsIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: alertsIdentityName
  location: location
  tags: tags
}

resource alertsReadLogs 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, alertsIdentity.id, logAnalyticsReader)
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', logAnalyticsReader)
    principalId: alertsIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// A run that ended `failed`: "run finished" and "run ended" (a run that could not go on) name
// its destination; lines written before "run ended" did take it from the run's earlier lines
// of the last two days (overrideQueryTimeRange), still looked up as a fallback, while only
// the last 15 minutes (windowSize) are counted.
resource failedRuns 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: 'exporter-runs-failed'
  location: location
  tags: tags
  kind: 'LogAlert'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${alertsIdentity.id}': {}
    }
  }
  properties: {
    displayName: 'Exporter: runs failed'
    description: 'One or more runs of a destination ended failed in the last 15 minutes. The run says why: GET /api/runs?state=failed, or python -m exporter runs show RUN_ID.'
    enabled: true
    severity: 1
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    overrideQueryTimeRange: 'P2D'
    scopes: [
      workspace.id
    ]
    targetResourceTypes: [
      'Microsoft.OperationalInsights/workspaces'
    ]
    criteria: {
      allOf: [
        {
          query: '''
let window = 15m;
let owners = AppTraces
    | where Message startswith "run requested " or Message startswith "run planned "
        or Message startswith "state committed " or Message startswith "run finished "
    | extend run_id = extract(@"\brun_id=(\S+)", 1, Message), owner = extract(@"\bdestination=(\S+)", 1, Message)
    | where isnotempty(run_id) and isnotempty(owner)
    | summarize owner = take_any(owner) by run_id;
AppTraces
| where TimeGenerated > ago(window)
| where Message startswith "run finished " or Message startswith "run ended "
| extend run_id = extract(@"\brun_id=(\S+)", 1, Message), state = extract(@"\bstate=(\S+)", 1, Message),
    destination = extract(@"\bdestination=(\S+)", 1, Message)
| where state == "failed"
| lookup kind=leftouter owners on run_id
| extend destination = coalesce(destination, owner, "unknown")
| summarize TimeGenerated = max(TimeGenerated) by destination, run_id
'''
          timeAggregation: 'Count'
          dimensions: [
            {
              name: 'destination'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    skipQueryValidation: true // see the header: AppTraces may not exist yet on a first deployment
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

// A step failed on every delivery (storage errors, bugs: SendGrid's errors never get here) and
// the host moved its message to `<queue>-poison`, where the poison handler recorded it
// (exporter/flow/poison.py): each handler's line says "on every attempt" / "on any attempt",
// or "queue message dropped" when the message named nothing left. Where no handler writes a
// line (the blob trigger's poison queue has no handler; the notifications' handler records the
// failure on the run only), the host's own line counts. `make check-infra` fails when a
// poison queue of storage.bicep is named nowhere here.
resource poisonMessages 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: 'exporter-poison-messages'
  location: location
  tags: tags
  kind: 'LogAlert'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${alertsIdentity.id}': {}
    }
  }
  properties: {
    displayName: 'Exporter: messages moved to a poison queue'
    description: 'A step failed on every delivery and its message went to a poison queue (dimension queue): a storage failure or a bug, not SendGrid. The run or batch records the last error; the exceptions table (AppExceptions) the traceback.'
    enabled: true
    severity: 1
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    overrideQueryTimeRange: 'P2D'
    scopes: [
      workspace.id
    ]
    targetResourceTypes: [
      'Microsoft.OperationalInsights/workspaces'
    ]
    criteria: {
      allOf: [
        {
          query: '''
let window = 15m;
let owners = AppTraces
    | where Message startswith "run requested " or Message startswith "run planned "
        or Message startswith "state committed " or Message startswith "run finished "
    | extend run_id = extract(@"\brun_id=(\S+)", 1, Message), owner = extract(@"\bdestination=(\S+)", 1, Message)
    | where isnotempty(run_id) and isnotempty(owner)
    | summarize owner = take_any(owner) by run_id;
AppTraces
| where TimeGenerated > ago(window)
| where ((Message startswith "run ended " or Message startswith "batch failed "
        or Message startswith "list not verified " or Message startswith "entity not exported ")
        and (Message contains "on every attempt" or Message contains "on any attempt"))
    or (Message startswith "queue message dropped: " and Message contains "-poison ")
    or (Message startswith "Message has reached MaxDequeueCount"
        and (Message contains "'webjobs-blobtrigger-poison'" or Message contains "'notifications-poison'"))
| extend run_id = extract(@"\brun_id=(\S+)", 1, Message)
| extend queue = case(
    Message startswith "Message has reached MaxDequeueCount", extract(@"to queue '([^']+)'", 1, Message),
    Message startswith "run ended ", "export-requests-poison",
    Message contains "sending failed on every attempt", "contact-batches-poison",
    Message contains "the import job could not be checked on any attempt", "import-jobs-poison",
    Message startswith "list not verified ", "list-checks-poison",
    Message startswith "entity not exported ", "cdm-manifests-poison",
    extract(@"\bqueue=(\S+)", 1, Message))
| lookup kind=leftouter owners on run_id
| extend destination = coalesce(owner, "unknown")
| project TimeGenerated, destination, queue, run_id
'''
          timeAggregation: 'Count'
          dimensions: [
            {
              name: 'destination'
              operator: 'Include'
              values: [
                '*'
              ]
            }
            {
              name: 'queue'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    skipQueryValidation: true // see the header: AppTraces may not exist yet on a first deployment
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

// Drift: a run found its list different from the segment on a second look (after SendGrid's
// lag: an odd `look`), healed it once (or could not), and still ended failed: someone edits
// the list by hand, or SendGrid drops contacts. A drift that healing fixed ends `succeeded`
// and does not alert.
resource listDrift 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: 'exporter-list-drift'
  location: location
  tags: tags
  kind: 'LogAlert'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${alertsIdentity.id}': {}
    }
  }
  properties: {
    displayName: 'Exporter: a list differs from its segment after healing'
    description: 'A run read its list back, found members missing, changed or (mirror mode) extra after SendGrid\'s lag, sent them again, and the list still differed: the run failed with the differences. Look for hand edits of the list, or ask SendGrid.'
    enabled: true
    severity: 2
    evaluationFrequency: 'PT15M'
    windowSize: 'PT1H'
    scopes: [
      workspace.id
    ]
    targetResourceTypes: [
      'Microsoft.OperationalInsights/workspaces'
    ]
    criteria: {
      allOf: [
        {
          query: '''
AppTraces
| where Message startswith "list looked at " or Message startswith "run finished "
| extend run_id = extract(@"\brun_id=(\S+)", 1, Message),
    destination = extract(@"\bdestination=(\S+)", 1, Message),
    state = extract(@"\bstate=(\S+)", 1, Message),
    look = toint(extract(@"\blook=(\d+)", 1, Message)),
    missing = toint(extract(@"\bmissing=(\d+)", 1, Message)),
    changed = toint(extract(@"\bchanged=(\d+)", 1, Message)),
    extra = toint(extract(@"\bextra=(\d+)", 1, Message))
| summarize
    differed = countif(Message startswith "list looked at " and look % 2 == 1 and missing + changed + extra > 0),
    failed = countif(Message startswith "run finished " and state == "failed"),
    destination = take_anyif(destination, isnotempty(destination)),
    TimeGenerated = max(TimeGenerated)
    by run_id
| where differed > 0 and failed > 0
| project TimeGenerated, destination, run_id
'''
          timeAggregation: 'Count'
          dimensions: [
            {
              name: 'destination'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    skipQueryValidation: true // see the header: AppTraces may not exist yet on a first deployment
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

output actionGroupName string = actionGroup.name
output actionGroupId string = actionGroup.id
output alertRuleNames array = [
  failedRuns.name
  poisonMessages.name
  listDrift.name
]
