"""Keep signatures out of logs: pre-signed URLs are shown without their query string."""

from __future__ import annotations

import logging

import httpx

__all__ = ["install_httpx_log_redaction", "redact_url"]


def redact_url(url: str | httpx.URL) -> str:
    """Drop the query, fragment and any user:password, which is where signatures and keys live."""
    try:
        parsed = httpx.URL(str(url))
    except (httpx.InvalidURL, TypeError, ValueError):
        return "<unparseable url>"
    return str(parsed.copy_with(query=None, fragment=None, userinfo=b""))


class _RedactURLs(logging.Filter):
    """httpx logs every request URL at INFO; strip query strings from those records."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_url(a) if isinstance(a, httpx.URL) else a for a in record.args
            )
        return True


_FILTER = _RedactURLs()


def install_httpx_log_redaction() -> None:
    """Attach the filter once to the loggers httpx and httpcore write request lines to."""
    for name in ("httpx", "httpcore"):
        log = logging.getLogger(name)
        if _FILTER not in log.filters:
            log.addFilter(_FILTER)
