"""A local Azure Functions host: runs the app's functions against Azurite with Azure's semantics.

Core Tools (`func start`) cannot be installed on our machines (its installer downloads from the
internet), so the local stack and the tests run the app here; with Core Tools, `func start` runs
the same app. `python -m exporter.local.host` (`__main__`) runs it until SIGTERM,
`runtime.LocalHost` in-process. Each module says what it reproduces of Azure's host, and what not:

  config     local.settings.json, host.json, storage connections
  settings   the settings while it runs: the file followed, functions switched off
  app        loading function_app, reading its functions and bindings
  invoker    invocations: thread pool, event loop, functionTimeout, outputs, one log line each
  listener   the polling thread of each queue, blob and timer function
  queues     queue triggers: leases, dequeue count, the poison queue
  blobs      blob triggers: each version once, receipts, the poison queue
  timers     timer triggers: NCRONTAB, run on startup, past due
  http       HTTP triggers: routes, function keys
  runtime    LocalHost: start, stop

Not reproduced anywhere: scale-out and per-instance concurrency, Application Insights, the admin
and health endpoints.
"""
