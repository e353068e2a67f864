"""HTTP triggers: routes, function keys, `HttpRequest` in, `HttpResponse` out.

Functions listen on `/{routePrefix}/{route}`, with `{name}`, `{name?}`, `{*rest}` and the
constraints int, long, bool, alpha, guid, double, float, decimal, and their `methods`. Auth
levels: ANONYMOUS needs no key; FUNCTION and ADMIN need the key from the setting
`LOCAL_FUNCTION_KEY` (generated and logged once when unset, so that it can be used), in the
header `x-functions-key` or the query `code`, else 401 with a JSON body `{"error": ...}` saying
what is missing (Azure's body is empty). A function switched off by
`AzureWebJobs.<name>.Disabled` answers 404, as in Azure. Core Tools does not check keys locally;
this host does, so a missing key fails in tests too. A function gets an
`azure.functions.HttpRequest` and returns an `HttpResponse` or a `str`; unknown routes and
methods are 404, a failing function 500. No access log (its request line would carry a `code=`
key). Not supported: per-function keys, CORS, HTTP streaming.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import azure.functions as func
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from exporter.local.host.app import FunctionSpec
from exporter.local.host.config import THREAD_PREFIX, HostError
from exporter.local.host.invoker import Invoker

if typing.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

logger = logging.getLogger("exporter.local.host")

DEFAULT_HTTP_PORT: Final = 7071
FUNCTION_KEY_SETTING: Final = "LOCAL_FUNCTION_KEY"
_ROUTE_PARAMETER = re.compile(r"\{(\*)?([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z]+))?(\?)?\}")
_ROUTE_CONSTRAINTS: Final = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "bool": r"(?:true|false)",
    "alpha": r"[A-Za-z]+",
    "guid": r"[0-9A-Fa-f]{8}-?(?:[0-9A-Fa-f]{4}-?){3}[0-9A-Fa-f]{12}",
    "double": r"-?\d+(?:\.\d+)?",
    "float": r"-?\d+(?:\.\d+)?",
    "decimal": r"-?\d+(?:\.\d+)?",
}


@dataclass(frozen=True, slots=True)
class Route:
    """An HTTP trigger's route template compiled for matching (ASP.NET-style templates)."""

    template: str
    regex: re.Pattern[str]
    names: dict[str, str]
    precedence: tuple[int, ...]

    @classmethod
    def parse(cls, template: str, where: str) -> Route:
        segments = [s for s in template.strip("/").split("/") if s] if template else []
        parts: list[str] = []
        names: dict[str, str] = {}
        ranks: list[int] = []
        optional_seen = False
        for index, segment in enumerate(segments):
            whole = _ROUTE_PARAMETER.fullmatch(segment)
            if whole is not None and (whole.group(4) or whole.group(1)):
                catch_all, name, constraint, _ = whole.groups()
                if catch_all and index != len(segments) - 1:
                    raise HostError(f"{where}: catch-all {segment} must be the last segment")
                group = f"p{len(names)}"
                names[group] = name
                body = ".*" if catch_all else _constraint(constraint, segment, where)
                parts.append(f"(?:/(?P<{group}>{body}))?")
                ranks.append(4 if catch_all else 3)
                optional_seen = True
                continue
            if optional_seen:
                raise HostError(f"{where}: only the last segments of a route may be optional")
            pieces = re.split(r"(\{[^{}]*\})", segment)
            regex = "/"
            rank = 0
            for piece in pieces:
                if not piece.startswith("{"):
                    if "{" in piece or "}" in piece:
                        raise HostError(f"{where}: unbalanced braces in route {template!r}")
                    regex += re.escape(piece)
                    continue
                found = _ROUTE_PARAMETER.fullmatch(piece)
                if found is None or found.group(1) or found.group(4):
                    raise HostError(
                        f"{where}: route parameter {piece} is not supported locally (use "
                        f"{{name}}, {{name:constraint}}, or as a whole trailing segment "
                        f"{{name?}} or {{*name}}; constraints: {', '.join(_ROUTE_CONSTRAINTS)})"
                    )
                _, name, constraint, _ = found.groups()
                group = f"p{len(names)}"
                names[group] = name
                regex += f"(?P<{group}>{_constraint(constraint, piece, where)})"
                rank = max(rank, 1 if constraint else 2)
            parts.append(regex)
            ranks.append(rank)
        lowered = [n.lower() for n in names.values()]
        if len(set(lowered)) != len(lowered):
            raise HostError(f"{where}: a route parameter name repeats in {template!r}")
        compiled = re.compile("".join(parts), re.IGNORECASE | re.DOTALL)
        return cls(template, compiled, names, tuple(ranks))

    def match(self, path: str) -> dict[str, str] | None:
        found = self.regex.fullmatch(path)
        if found is None:
            return None
        return {self.names[g]: v for g, v in found.groupdict().items() if v is not None}


def _constraint(constraint: str | None, piece: str, where: str) -> str:
    if constraint is None:
        return "[^/]+"
    pattern = _ROUTE_CONSTRAINTS.get(constraint.lower())
    if pattern is None:
        raise HostError(
            f"{where}: route parameter {piece} is not supported locally "
            f"(supported: {', '.join(_ROUTE_CONSTRAINTS)})"
        )
    return pattern


@dataclass(frozen=True, slots=True)
class HttpFunction:
    spec: FunctionSpec
    route: Route
    methods: frozenset[str] | None
    auth_level: str


def http_function(spec: FunctionSpec) -> HttpFunction:
    """An HTTP function with its route, methods and auth level; HostError for a bad route."""
    trigger = spec.trigger
    where = f"function {spec.name}, binding {trigger.get('name')!r} (httpTrigger)"
    methods = trigger.get("methods")
    return HttpFunction(
        spec=spec,
        route=Route.parse(str(trigger.get("route") or spec.name), where),
        methods=None if not methods else frozenset(str(m).upper() for m in methods),
        auth_level=str(trigger.get("authLevel") or "FUNCTION").upper(),
    )


class _QuietHandler(WSGIRequestHandler):
    """No werkzeug access log: its request line would carry a `code=` key."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        logger.debug("HTTP %s %s -> %s", self.command, self.path.split("?", 1)[0], code)


class HttpServer:
    """The HTTP trigger front door: routing, function keys, HttpRequest in, HttpResponse out."""

    def __init__(
        self,
        functions: Sequence[HttpFunction],
        invoker: Invoker,
        *,
        route_prefix: str,
        function_key: str,
        host: str,
        port: int,
        disabled: Callable[[str], bool] = lambda name: False,
    ) -> None:
        # Most specific first: literal segments before parameters before optional ones.
        self._functions = sorted(functions, key=lambda f: (*f.route.precedence, 9))
        self._invoker = invoker
        self._prefix = f"/{route_prefix}" if route_prefix else ""
        self._key = function_key
        self._disabled = disabled
        try:
            self._server: BaseWSGIServer = make_server(
                host, port, self._wsgi, threaded=True, request_handler=_QuietHandler
            )
        except OSError as exc:
            raise HostError(
                f"cannot listen on {host}:{port} for HTTP triggers: {exc} "
                f"(is another host running? pass another --http-port)"
            ) from exc
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"{THREAD_PREFIX}-http",
            daemon=True,
        )

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def start(self) -> None:
        self._thread.start()

    def stop_accepting(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)

    def close(self) -> None:
        self.stop_accepting()
        self._server.server_close()

    def _wsgi(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
        request = Request(environ)
        response = self._handle(request)
        return iter(response(environ, start_response))

    def _handle(self, request: Request) -> Response:
        path = request.path
        if self._prefix:
            if path.lower() != self._prefix.lower() and not path.lower().startswith(
                self._prefix.lower() + "/"
            ):
                return Response(status=404)
            path = path[len(self._prefix) :]
        if len(path) > 1:
            path = path.rstrip("/")
        method = request.method.upper()
        for candidate in self._functions:
            route_params = candidate.route.match(path if path != "/" else "")
            if route_params is None:
                continue
            if candidate.methods is not None and method not in candidate.methods:
                continue
            if self._disabled(candidate.spec.name):
                return Response(status=404)  # as Azure answers for a disabled function
            if candidate.auth_level != "ANONYMOUS" and not self._authorized(request):
                return _unauthorized(request)
            return self._invoke(candidate, request, route_params)
        return Response(status=404)

    def _authorized(self, request: Request) -> bool:
        given = request.headers.get("x-functions-key") or request.args.get("code") or ""
        return hmac.compare_digest(given.encode(), self._key.encode())

    def _invoke(
        self, function: HttpFunction, request: Request, route_params: dict[str, str]
    ) -> Response:
        http_request = func.HttpRequest(
            method=request.method.upper(),
            url=request.url,
            headers=dict(request.headers.items()),
            params=request.args.to_dict(flat=True),
            route_params=route_params,
            body=request.get_data(),
        )
        future = self._invoker.invoke(function.spec, lambda: http_request)
        try:
            result = future.result()
        except Exception:  # the invoker logged it; Azure answers 500 without details
            return Response(status=500)
        return _to_response(function.spec.name, result)


def _unauthorized(request: Request) -> Response:
    """401 with a JSON body saying what is missing (Azure answers 401 with an empty body)."""
    given = bool(request.headers.get("x-functions-key") or request.args.get("code"))
    problem = "the function key is not valid" if given else "this function needs a function key"
    message = (
        f"{problem}: send the key in the x-functions-key header or the code query parameter "
        f"(locally the {FUNCTION_KEY_SETTING} setting, else the key the host logged at start)"
    )
    return Response(json.dumps({"error": message}), status=401, content_type="application/json")


def _to_response(name: str, result: Any) -> Response:
    if isinstance(result, str):
        return Response(result, status=200, content_type="text/plain; charset=utf-8")
    if isinstance(result, func.HttpResponse):
        headers = list(result.headers.items())
        if not any(key.lower() == "content-type" for key, _ in headers):
            mimetype = result.mimetype or "text/plain"
            content_type = (
                f"{mimetype}; charset={result.charset}"
                if mimetype.startswith("text/")
                else mimetype
            )
            headers.append(("Content-Type", content_type))
        return Response(result.get_body() or b"", status=result.status_code, headers=headers)
    logger.error(
        "function %s returned %s: an HTTP function must return func.HttpResponse or str",
        name,
        type(result).__name__,
    )
    return Response(status=500)
