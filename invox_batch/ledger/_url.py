"""Which database holds the ledger: SQLite in the state folder, or a named PostgreSQL.

A URL may carry a password, so it travels as a ``SecretStr`` and every message shows it masked.
The plain ``postgresql://user:password@host:port/database`` form is accepted; the async driver
is chosen here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import SecretStr
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from invox import ConfigurationError

__all__ = ["ENV", "SQLITE_NAME", "LedgerTarget", "has_password", "masked", "parse_url"]

ENV = "INVOX_LEDGER_URL"
SQLITE_NAME = "ledger.sqlite3"
_DRIVERS = {
    "postgresql": ("postgresql", "postgresql+asyncpg"),
    "postgres": ("postgresql", "postgresql+asyncpg"),
    "postgresql+asyncpg": ("postgresql", "postgresql+asyncpg"),
    "sqlite": ("sqlite", "sqlite+aiosqlite"),
    "sqlite+aiosqlite": ("sqlite", "sqlite+aiosqlite"),
}
_FORM = "postgresql://user:password@host:port/database"


@dataclass(frozen=True)
class LedgerTarget:
    """A database to open: its driver URL (secret) and how to name it in messages."""

    url: SecretStr
    shown: str
    dialect: Literal["sqlite", "postgresql"]

    @property
    def shared(self) -> bool:
        """Whether other machines can reach these records (a database server, not a file)."""
        return self.dialect == "postgresql"

    @classmethod
    def sqlite(cls, path: Path) -> LedgerTarget:
        """The embedded default: a file in the state folder."""
        url = f"sqlite+aiosqlite:///{path.resolve()}"
        return cls(SecretStr(url), str(path), "sqlite")


def _scheme(text: str) -> str | None:
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):", text.strip())
    return match.group(1).lower() if match else None


def masked(text: str) -> str:
    """The URL with its password replaced by ``***`` (unparseable: only its scheme)."""
    try:
        return make_url(text.strip()).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return f"{_scheme(text) or 'an unparseable'} URL"


def has_password(text: str) -> bool:
    """Whether the URL carries a password (it must then stay out of parameters and logs)."""
    try:
        return bool(make_url(text.strip()).password)
    except (ArgumentError, ValueError):
        return ":" in text.partition("@")[0].rpartition("//")[2] and "@" in text


def parse_url(text: str, source: str = ENV) -> LedgerTarget:
    """The ledger database a URL names; a bad one is one line naming ``source``, no password."""
    scheme = _scheme(text)
    if scheme not in _DRIVERS:
        shown = f"'{scheme}'" if scheme else "none"
        raise ConfigurationError(
            f"{source}: unsupported scheme {shown}; use {_FORM} (or sqlite:///path/to/file)"
        )
    try:
        url: URL = make_url(text.strip())
    except (ArgumentError, ValueError):
        raise ConfigurationError(f"{source}: not a database URL; use {_FORM}") from None
    dialect, driver = _DRIVERS[scheme]
    url = url.set(drivername=driver)
    if dialect == "postgresql" and not url.database:
        raise ConfigurationError(f"{source}: name the database, as in {_FORM}")
    if dialect == "sqlite" and not url.database:
        raise ConfigurationError(f"{source}: name the SQLite file, as in sqlite:///path/to/file")
    shown = url.set(drivername=scheme).render_as_string(hide_password=True)
    kind: Literal["sqlite", "postgresql"] = "sqlite" if dialect == "sqlite" else "postgresql"
    return LedgerTarget(SecretStr(url.render_as_string(hide_password=False)), shown, kind)
