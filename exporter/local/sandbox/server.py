"""The sandbox on a threaded HTTP server, in-process (`SandboxServer`) or in the foreground
(`main`, for `python -m exporter.local.sandbox` and `exporter sandbox`), which prints one
`sandbox listening on URL` line once it listens."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Sequence
from typing import Self

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from exporter.local.process import configure_logging, serve_until_signal
from exporter.local.sandbox.app import build_app
from exporter.local.sandbox.config import SandboxConfig, config_from_args
from exporter.local.sandbox.persist import StateFileError
from exporter.local.settings_file import SettingsFileError

log = logging.getLogger("exporter.local.sandbox")


class _QuietHandler(WSGIRequestHandler):
    """The app logs each request itself (no query strings); werkzeug's access line goes."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class SandboxServer:
    """The sandbox on a threaded HTTP server; `url` is known once constructed (port 0 works)."""

    def __init__(self, config: SandboxConfig) -> None:
        self.app = build_app(config)
        try:
            self._server: BaseWSGIServer = make_server(
                config.host, config.port, self.app, threaded=True, request_handler=_QuietHandler
            )
        except BaseException:
            self.app.close()
            raise
        self._thread: threading.Thread | None = None
        host = config.host
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{self._server.server_port}"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def start(self) -> Self:
        """Serve on a background thread (for in-process use)."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="sandbox-server", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def shutdown(self) -> None:
        """Stop serving (idempotent) and stop the job thread."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()
        self.app.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sandbox until SIGTERM or SIGINT; prints one `sandbox listening on URL` line.
    Exit status 2 when its state file or keys' file cannot be read, or its port is taken."""
    config, level = config_from_args(argv)
    configure_logging(level)
    try:
        server = SandboxServer(config)
    except (StateFileError, SettingsFileError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    serve_until_signal(server.start, server.shutdown, lambda: f"sandbox listening on {server.url}")
    log.info("sandbox stopped")
    return 0
