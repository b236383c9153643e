"""What ``db`` names: a SQLite file path, or a PostgreSQL URL whose password is never printed."""

from __future__ import annotations

import re
from pathlib import Path

from harness.errors import UsageError

URL_SCHEMES = ("postgresql://", "postgres://")
EXTRA = "burnin[postgres]"  # the optional dependency a postgresql:// URL needs (psycopg 3)
_PASSWORD_IN_URL = re.compile(r"([a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]*@", re.IGNORECASE)
_PASSWORD_KEYWORD = re.compile(r"(password\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)


def mask(text: str) -> str:
    """``text`` with every password in it (URL user:password@, or password=...) replaced by ***."""
    return _PASSWORD_KEYWORD.sub(r"\1***", _PASSWORD_IN_URL.sub(r"\1***@", text))


class DbUrl:
    """A PostgreSQL URL. ``str()``, ``repr()`` and f-strings show it with the password masked, so
    a message that names the database never leaks it; ``url`` is the real one, for the driver."""

    __slots__ = ("url",)

    def __init__(self, url: str) -> None:
        self.url = url

    def __str__(self) -> str:
        return mask(self.url)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __repr__(self) -> str:
        return f"DbUrl({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DbUrl) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)


DbTarget = Path | DbUrl


def is_url(value: str) -> bool:
    return value.strip().lower().startswith(URL_SCHEMES)


def as_target(value: str | Path | DbUrl, base: Path | None = None) -> DbTarget:
    """A path or URL as the store's target: a URL stays a URL, anything else is a file path
    (relative to ``base`` when given); a URL of another database is refused in one line."""
    if isinstance(value, DbUrl | Path):
        return value if isinstance(value, DbUrl) or base is None or value.is_absolute() else base / value
    text = value.strip()
    if is_url(text):
        return DbUrl(text)
    scheme = re.match(r"^([a-z][a-z0-9+.-]*)://", text, re.IGNORECASE)
    if scheme:
        raise UsageError(f"{mask(text)}: unsupported results database URL ({scheme.group(1)}://); use a "
                         f"postgresql:// URL or a SQLite file path")
    path = Path(value).expanduser()
    return path if base is None or path.is_absolute() else base / path
