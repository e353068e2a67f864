// App Service Authentication ("Easy Auth") with Microsoft Entra ID in front of the web console
// (`/api/console/...`): the platform signs the user in and hands the app the principal
// (X-MS-CLIENT-PRINCIPAL, a header external requests cannot set); the console itself then
// requires the app role CONSOLE_ROLE (exporter/console/auth.py). Everything is behind sign-in
// except the paths below, which authenticate with keys of their own.
//
// Deployed by main.bicep, and again by the postprovision hook (infra/hooks/postprovision.sh)
// right after it creates the app registration, so a first `azd up` ends with a console that
// signs in. `make check-infra` checks this file (infra/check_auth.py); mind that pycep, the
// parser checkov uses, takes at most four comment lines in a row.
param functionAppName string

@description('Application (client) id of the console\'s Entra app registration: azd env AZURE_CONSOLE_CLIENT_ID, which the postprovision hook sets. Empty: no identity provider, and the platform answers 401 to every request it does not exclude, so the console stays closed (the JSON API and Event Grid work as before).')
param clientId string = ''

resource app 'Microsoft.Web/sites@2023-12-01' existing = {
  name: functionAppName
}

resource auth 'Microsoft.Web/sites/config@2023-12-01' = {
  // checkov reads every Microsoft.Web/sites/config resource as the site's 'web' config:
  //checkov:skip=CKV_AZURE_63:A setting of the 'web' config (HTTP logging), not of authsettingsV2.
  //checkov:skip=CKV_AZURE_65:A setting of the 'web' config (detailed errors), not of authsettingsV2.
  parent: app
  //checkov:skip=CKV_AZURE_66:A setting of the 'web' config (failed request tracing), not of authsettingsV2.
  //checkov:skip=CKV_AZURE_80:A setting of the 'web' config (.NET Framework version), not of authsettingsV2.
  //checkov:skip=CKV_AZURE_88:A setting of the 'web' config (Azure Files mounts), not of authsettingsV2.
  name: 'authsettingsV2'
  //checkov:skip=CKV_AZURE_222:A setting of the site (public network access; skipped there, in function.bicep, with its reason), not of authsettingsV2.
  //checkov:skip=CKV_AZURE_13:That check reads the V1 schema's properties.enabled; authsettingsV2 turns the platform on with properties.platform.enabled, which CKV_AZURE_56 and infra/check_auth.py check.
  properties: {
    platform: {
      enabled: true
      runtimeVersion: '~1'
    }
    globalValidation: {
      requireAuthentication: true
      // No registration yet: refuse (401) rather than redirect to a provider that is not there.
      unauthenticatedClientAction: empty(clientId) ? 'Return401' : 'RedirectToLoginPage'
      redirectToProvider: 'azureactivedirectory'
      // Callers that cannot sign in with a browser, each checked by the Functions host with a key
      // of its own. An entry matches its path exactly; `/*` covers what lies below it.
      excludedPaths: [
        // The JSON API (exporter/triggers/api.py): function keys, as today (CLI, automation).
        '/api/destinations'
        '/api/destinations/*'
        '/api/runs'
        '/api/runs/*'
        '/api/snapshots'
        '/api/snapshots/*'
        // Event Grid's deliveries to the blob trigger (blob-events.bicep): the blobs_extension
        // system key in the query string, no token; without this every delivery and the
        // subscription's validation handshake would be refused.
        '/runtime/webhooks/blobs'
        // The host's admin API (the portal, ARM's key listing for the postdeploy hook, azd):
        // the master key or the platform's own token.
        '/admin/*'
      ]
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: !empty(clientId)
        registration: {
          clientId: clientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
          // No client secret: the app's user-assigned identity signs a client assertion, trusted
          // by a federated identity credential on the registration (the hook adds it); this
          // setting holds the identity's client id (function.bicep). Preview feature of App
          // Service authentication, workforce tenants only.
          clientSecretSettingName: 'OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID'
        }
        validation: {
          // Browser sign-ins are ID tokens for clientId itself (always accepted); this admits
          // access tokens issued for the registration's identifier URI, which the hook sets.
          allowedAudiences: [
            'api://${clientId}'
          ]
        }
      }
    }
    login: {
      // On (the default, and what Microsoft's Flex Consumption samples set): the docs make
      // claims mapping depend on it, and the console needs the roles claim in the principal.
      tokenStore: {
        enabled: true
      }
      preserveUrlFragmentsForLogins: true
      cookieExpiration: {
        convention: 'FixedTime'
        timeToExpiration: '08:00:00'
      }
      nonce: {
        validateNonce: true
      }
    }
    httpSettings: {
      requireHttps: true
      routes: {
        apiPrefix: '/.auth'
      }
      // The front end is the app's own: trust no forwarded host or scheme header from a client.
      forwardProxy: {
        convention: 'NoProxy'
      }
    }
  }
}

output consoleUrl string = 'https://${app.properties.defaultHostName}/api/console/'
