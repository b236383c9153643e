"""Wall-clock stamps and run ids: one format everywhere (UTC, seconds, ``Z``)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime


def utcnow() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)
