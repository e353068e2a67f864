"""The Azure Functions app (Python v2 model): registers the blueprints of `exporter.triggers`.

Triggers stay thin; the flow lives in `exporter.flow`, one module a step. Run it with the local
host (`python -m exporter up`) or, where Core Tools are installed, with `func start`.
"""

import azure.functions as func

from exporter.triggers import api, console, notifications, pipeline, schedule, snapshots

app = func.FunctionApp()
app.register_functions(snapshots.bp)
app.register_functions(pipeline.bp)
app.register_functions(notifications.bp)
app.register_functions(schedule.bp)
app.register_functions(api.bp)
app.register_functions(console.bp)
