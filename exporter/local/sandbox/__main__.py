"""`python -m exporter.local.sandbox`: the sandbox in the foreground until SIGTERM or SIGINT
(flags: `--help`)."""

from __future__ import annotations

import sys

from exporter.local.sandbox.server import main

if __name__ == "__main__":
    sys.exit(main())
