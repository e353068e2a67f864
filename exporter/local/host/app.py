"""Loading the function app and reading its functions, as the Python worker indexes a v2 app.

`function_app.py` is imported from the app folder and its functions are read once through
`app.get_functions()`; each becomes a `FunctionSpec`: its trigger (with `%SETTING%`s replaced),
how its parameters are filled (the trigger value by its annotation, a `context` parameter, queue
outputs), and where its queue outputs go (`func.Out` parameters or `$return`, sent after the
function succeeds, encoded as host.json's messageEncoding says; a missing queue is created).

Startup fails, naming the function and binding, on what would not work: an unsupported trigger
or binding, an unknown `%SETTING%`, a missing connection, an invalid queue name, a parameter
without a binding (the trigger modules check the rest: container names, schedules, routes).
Not supported: other triggers and bindings (input bindings, blob or table outputs, Service Bus,
Event Grid, Durable) and retry policies (which do not apply to queue and blob triggers anyway).
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import inspect
import json
import sys
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import azure.functions as func
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient

from exporter.local.host.config import (
    DEFAULT_CONNECTION,
    HostConfig,
    HostError,
    check_storage_name,
    create_queue,
    queue_client,
    storage_connection,
    substitute,
)

_BLOB_SDK_MODULE: Final = "azurefunctions.extensions.bindings.blob"
_BLOB_SDK_TYPES: Final = ("BlobClient", "ContainerClient", "StorageStreamDownloader")


class AppModule:
    """The app's module (`function_app.py` in `app_dir`), imported with `load()`; `unload()` puts
    `sys.modules` and `sys.path` back as they were."""

    def __init__(self, app_dir: Path, module_name: str) -> None:
        self.app_dir = app_dir
        self.module_name = module_name
        self._saved_module: ModuleType | None = None
        self._added_path = False

    def load(self) -> func.FunctionRegister:
        path = self.app_dir / f"{self.module_name}.py"
        if not path.is_file():
            raise HostError(f"{path} not found: is --app-dir the folder with the function app?")
        if str(self.app_dir) not in sys.path:
            sys.path.insert(0, str(self.app_dir))
            self._added_path = True
        spec = importlib.util.spec_from_file_location(self.module_name, path)
        if spec is None or spec.loader is None:
            raise HostError(f"cannot load {path} as a module")
        module = importlib.util.module_from_spec(spec)
        self._saved_module = sys.modules.get(self.module_name)
        sys.modules[self.module_name] = module
        spec.loader.exec_module(module)
        app = getattr(module, "app", None)
        if not isinstance(app, func.FunctionRegister):
            raise HostError(f"{path} has no `app` (an azure.functions.FunctionApp)")
        return app

    def unload(self) -> None:
        if self._saved_module is not None:
            sys.modules[self.module_name] = self._saved_module
        else:
            sys.modules.pop(self.module_name, None)
        if self._added_path:
            with contextlib.suppress(ValueError):
                sys.path.remove(str(self.app_dir))
            self._added_path = False


@dataclass(frozen=True, slots=True)
class FunctionInfo:
    """A function the host runs: its name and trigger type (`queueTrigger`, `httpTrigger`...)."""

    name: str
    trigger: str


class QueueOutput:
    """Where a queue output binding sends its messages, encoded as host.json says."""

    def __init__(self, client: QueueClient, encoding: str) -> None:
        self.client = client
        self.encoding = encoding

    def send(self, value: object) -> None:
        items = value if isinstance(value, list | tuple) else [value]
        for item in items:
            self._send_one(_as_bytes(item))

    def _send_one(self, body: bytes) -> None:
        text = (
            base64.b64encode(body).decode("ascii")
            if self.encoding == "base64"
            else body.decode("utf-8")
        )
        try:
            self.client.send_message(text)
        except ResourceNotFoundError:
            create_queue(self.client)
            self.client.send_message(text)


def _as_bytes(item: object) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode("utf-8")
    if isinstance(item, func.QueueMessage):
        return item.get_body()
    raise TypeError(
        f"a queue output takes str, bytes or QueueMessage (or a list of them), "
        f"not {type(item).__name__}"
    )


@dataclass(slots=True)
class FunctionSpec:
    """One function: what triggers it, and how its parameters are filled."""

    name: str
    user_function: Callable[..., Any]
    is_async: bool
    trigger: dict[str, Any]
    trigger_parameter: str
    value_kind: str
    context_parameter: str | None
    outputs: dict[str, QueueOutput] = field(default_factory=dict)
    return_output: QueueOutput | None = None

    @property
    def trigger_type(self) -> str:
        return str(self.trigger["type"])

    @property
    def function_id(self) -> str:
        """The id Azure's host uses in receipts and poison messages."""
        return f"Host.Functions.{self.name}"


def function_spec(
    function: func.Function, config: HostConfig, settings: Mapping[str, str]
) -> FunctionSpec:
    """The function as the host runs it; HostError when a binding cannot work here."""
    name = function.get_function_name() or function.get_user_function().__name__
    bindings: list[dict[str, Any]] = json.loads(function.get_function_json())["bindings"]
    user_function = function.get_user_function()
    triggers = [b for b in bindings if str(b.get("type", "")).endswith("Trigger")]
    if len(triggers) != 1:
        raise HostError(f"function {name}: expected one trigger, found {len(triggers)}")
    trigger = dict(triggers[0])
    trigger_type = str(trigger["type"])
    where = f"function {name}, binding {trigger.get('name')!r} ({trigger_type})"
    if trigger_type not in ("queueTrigger", "blobTrigger", "timerTrigger", "httpTrigger"):
        raise HostError(
            f"{where}: trigger type {trigger_type!r} is not supported by the local host "
            f"(queueTrigger, blobTrigger, timerTrigger, httpTrigger are)"
        )
    for key in ("queueName", "path", "schedule"):
        if isinstance(trigger.get(key), str):
            trigger[key] = substitute(trigger[key], settings, where)

    outputs: dict[str, QueueOutput] = {}
    return_output: QueueOutput | None = None
    for binding in bindings:
        if binding is triggers[0]:
            continue
        binding_name = str(binding.get("name"))
        binding_type = str(binding.get("type"))
        direction = str(binding.get("direction", "")).upper()
        binding_where = f"function {name}, binding {binding_name!r} ({binding_type})"
        if binding_type == "http" and direction == "OUT" and trigger_type == "httpTrigger":
            continue
        if binding_type == "queue" and direction == "OUT":
            target = _queue_output(binding, config, settings, binding_where)
            if binding_name == "$return":
                return_output = target
            else:
                outputs[binding_name] = target
            continue
        raise HostError(
            f"{binding_where}: {direction.lower() or 'this'} binding type {binding_type!r} "
            f"is not supported by the local host (only queue outputs are)"
        )

    trigger_parameter = str(trigger["name"])
    annotations = _annotations(user_function)
    context_parameter: str | None = None
    value_kind = "default"
    for parameter in inspect.signature(user_function).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        annotation = annotations.get(parameter.name, parameter.annotation)
        if parameter.name == trigger_parameter:
            value_kind = _value_kind(trigger_type, annotation, where)
        elif parameter.name in outputs:
            continue
        elif parameter.name == "context" or (
            isinstance(annotation, type) and issubclass(annotation, func.Context)
        ):
            context_parameter = parameter.name
        elif parameter.default is parameter.empty:
            raise HostError(
                f"function {name}: parameter {parameter.name!r} has no binding "
                f"(bindings: {', '.join(str(b.get('name')) for b in bindings)})"
            )
    return FunctionSpec(
        name=name,
        user_function=user_function,
        is_async=inspect.iscoroutinefunction(user_function),
        trigger=trigger,
        trigger_parameter=trigger_parameter,
        value_kind=value_kind,
        context_parameter=context_parameter,
        outputs=outputs,
        return_output=return_output,
    )


def _queue_output(
    binding: Mapping[str, Any], config: HostConfig, settings: Mapping[str, str], where: str
) -> QueueOutput:
    queue_name = substitute(str(binding.get("queueName", "")), settings, where)
    check_storage_name(queue_name, "queue", where)
    connection = storage_connection(
        str(binding.get("connection") or DEFAULT_CONNECTION), settings, where
    )
    client = queue_client(connection, queue_name, where)
    return QueueOutput(client, config.message_encoding)


def _annotations(function: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function)
    except Exception:  # unresolvable forward references: use the raw annotations
        return dict(getattr(function, "__annotations__", {}))


def _value_kind(trigger_type: str, annotation: Any, where: str) -> str:
    """How to build the trigger argument, from its annotation (as the worker's converters do)."""
    if annotation in (inspect.Parameter.empty, Any, None) or isinstance(annotation, str):
        return "default"
    if trigger_type in ("timerTrigger", "httpTrigger"):
        return "default"
    if annotation is bytes:
        return "bytes"
    if annotation is str:
        return "str"
    if trigger_type == "queueTrigger":
        if isinstance(annotation, type) and issubclass(annotation, func.QueueMessage):
            return "default"
        raise HostError(f"{where}: a queue trigger takes func.QueueMessage, str or bytes")
    module = getattr(annotation, "__module__", "")
    name = getattr(annotation, "__name__", "")
    if module.startswith(_BLOB_SDK_MODULE) and name in _BLOB_SDK_TYPES:
        return f"sdk:{name}"
    if isinstance(annotation, type) and issubclass(annotation, func.InputStream):
        return "default"
    raise HostError(
        f"{where}: a blob trigger takes func.InputStream, bytes, str or an SDK type from "
        f"{_BLOB_SDK_MODULE} ({', '.join(_BLOB_SDK_TYPES)}), not {annotation!r}"
    )
