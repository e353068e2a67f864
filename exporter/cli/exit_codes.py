"""The CLI's exit codes.

0 done; 1 a run, a connection test or the demo's check failed, or SendGrid refused (one line
`error: ...`); 2 the input is wrong, or names what does not exist (one line `error: ...` on
stderr, no traceback); 3 timed out waiting for runs.

1 also when storage, SendGrid or Key Vault cannot be reached: one line `error: <service> is
unreachable at <URL> (<why>): <what to do>`, within seconds, where <why> is one of connection
refused, host name not resolved (DNS), TLS handshake failed, timed out, connection failed; and
for any other error of the Azure SDK (one line, no traceback).
"""

from __future__ import annotations

EXIT_FAILED = 1
EXIT_INPUT = 2
EXIT_TIMEOUT = 3
