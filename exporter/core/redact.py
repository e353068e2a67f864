"""Keep email addresses out of logs and error messages.

SendGrid's error messages (and any text that quotes a row) may carry an address; everything that
can reach a log goes through `mask_emails` first. The domain stays: it helps diagnosis and is not
personal on its own in the common case.
"""

from __future__ import annotations

import re
from typing import Final

_EMAILISH: Final = re.compile(r"[^\s@\"'<>(),;:\[\]]+@(?=[^\s@\"'<>(),;:\[\]]+)")


def mask_emails(text: str) -> str:
    """`jane.doe@example.com` becomes `***@example.com`, wherever it stands in the text."""
    return _EMAILISH.sub("***@", text)
