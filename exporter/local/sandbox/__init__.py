"""A stateful SendGrid Marketing Campaigns API for local runs and tests.

It serves the contacts, lists, custom fields and contact exports endpoints of SendGrid's official
OpenAPI specs (vendored in `exporter/local/specs/`), rejects what they and SendGrid's documented
limits reject, keeps what SendGrid keeps, and injects SendGrid's failures on demand. Each module
says what it reproduces of SendGrid, and what not:

  server, __main__    the HTTP server; `python -m exporter.local.sandbox`
  config              SandboxConfig, from flags and SANDBOX_* variables
  app                 the WSGI app: a /v3 request through faults, auth, rate limit, spec, handler
  spec                the vendored specs: routes, request validation
  answers             what a handler gets and gives: the call, SendGrid's answers and errors
  api_contacts        /v3/marketing/contacts: upserts as import jobs, searches, counts
  api_lists           /v3/marketing/lists
  api_exports         /v3/marketing/contacts/exports
  api_fields          /v3/marketing/field_definitions
  control             /__sandbox/: state, faults, reset, members, request counts, export files
  faults, rate_limit  the faults on demand and their dice; the rate limit per API key
  jobs                the thread that finishes import jobs and exports
  store               SandboxStore, what the sandbox remembers: custom fields, contacts, jobs
  store_state         its shared state: contacts stored column-wise, the lock, SendGrid's lag
  store_lists         its lists
  store_exports       its contact exports and their files
  store_model         its answers and errors
  keys                which bearer keys it accepts: any, one, or those of a local.settings.json
  persist, saver      its state kept in a file between runs (`--state-file`), and saved

Segments, billing and subusers do not exist here.
"""
