"""The web console: server-rendered pages over the same `exporter.admin` code as the CLI and
the HTTP API, served by the function app itself (`exporter.triggers.console` routes
`/api/console/...` here).

`http` holds the console's own request and response (no Azure types), `router` the routes and
`dispatch` (sign-in, CSRF, security headers, error pages), `auth` who may use it (a session
signed with the local function key, or Microsoft Entra ID through App Service Authentication),
`context` what a page handler gets, `render` the templates, `pages/` one module a page.
"""
