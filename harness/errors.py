"""Errors the CLI turns into exit codes (docs/contract.md): one line, no traceback."""

from __future__ import annotations


class UsageError(Exception):
    """Bad usage or bad input (config, plan, fault spec): exit 2. The message names the file and field."""

    exit_code = 2


class HarnessUnavailable(Exception):
    """The harness could not run at all (e.g. a backend library is missing): exit 3."""

    exit_code = 3
