"""The one schema of a burnin results database, written once for both dialects.

Types are placeholders filled per dialect: ``{id}`` an auto-numbered key, ``{int}``, ``{real}``,
``{text}`` (PostgreSQL compares text byte-wise, ``COLLATE "C"``, so every ``ORDER BY`` sorts as
SQLite's BINARY does), and ``{seq}``: the order runs were started in (SQLite: the implicit rowid;
PostgreSQL: a ``seq`` column), which ``Store.run_seq`` and ``slot_known_good`` compare.
"""

from __future__ import annotations

SCHEMA_VERSION = 1  # SQLite's PRAGMA user_version; PostgreSQL's burnin_meta row

TABLES = (
    ("runs", "run_id {text} PRIMARY KEY, rack {text}, plan {text}, config_path {text}, plan_path {text}, "
             "started_at {text}, finished_at {text}, status {text}{seq}, stages {text}"),
    ("cards", "serial {text} PRIMARY KEY, model {text}, vendor {text}, first_seen {text}"),
    ("run_cards", "run_id {text}, key {text}, host {text}, slot {int}, backend {text}, serial {text}, model {text}, "
                  "locator {text}, identity {text}, state {text}, detail {text}, verdict {text}, actions {text}, "
                  "findings {text}, started_at {text}, finished_at {text}, stage {text}, stage_index {int}, "
                  "PRIMARY KEY (run_id, key)"),
    ("tests", "id {id}, run_id {text}, key {text}, idx {int}, name {text}, status {text}, duration_s {real}, "
              "metrics {text}, error {text}, measurements {text}"),
    ("findings", "id {id}, run_id {text}, key {text}, test {text}, code {text}, severity {text}, action {text}, "
                 "message {text}, location {text}, evidence {text}, test_id {int}"),
    ("samples", "id {id}, run_id {text}, key {text}, t {real}, tag {text}, data {text}"),
    ("repairs", "id {id}, serial {text}, at {text}, who {text}, host {text}, action {text}, note {text}, "
                "part {text}, after_run {text}"),
    ("field_reports", "id {id}, serial {text}, card_id {text}, at {text}, files {text}, verdict {text}, "
                      "actions {text}, report {text}"),
    # findings a host, one of its slots or its fabric owns (the interconnect's host gates, a baseboard)
    ("host_findings", "id {id}, run_id {text}, host {text}, test {text}, code {text}, severity {text}, "
                      "action {text}, message {text}, location {text}, evidence {text}"),
)
INDEXES = (
    "run_cards_serial ON run_cards(serial)",
    "run_cards_slot ON run_cards(host, slot)",
    "repairs_serial ON repairs(serial)",
    "tests_run_key ON tests(run_id, key)",
    "findings_run_key ON findings(run_id, key)",
    "samples_run_key ON samples(run_id, key)",
    "field_reports_serial ON field_reports(serial)",
    "host_findings_run ON host_findings(run_id, host)",
)
# (table, column) added after the first schema: an older database gains them, empty.
# ``findings.test_id`` links a finding to its test (NULL: raised outside any test, e.g. a peer
# comparison); ``runs.stages`` the plan's stage names; ``run_cards.stage``/``stage_index`` the
# stage a card is in (the room page and /metrics read them).
ADDED_COLUMNS = (("findings", "test_id {int}"), ("tests", "measurements {text}"), ("runs", "stages {text}"),
                 ("run_cards", "stage {text}"), ("run_cards", "stage_index {int}"))
# PostgreSQL only: who holds a card under test (the lock itself is an advisory lock), and the
# schema version
PG_TABLES = (
    ("card_locks", "name {text} PRIMARY KEY, holder {text}, since {text}"),
    ("burnin_meta", "key {text} PRIMARY KEY, value {text}"),
)

TYPES = {
    "sqlite": {"id": "INTEGER PRIMARY KEY AUTOINCREMENT", "int": "INTEGER", "real": "REAL", "text": "TEXT",
               "seq": ""},
    "postgresql": {"id": "BIGSERIAL PRIMARY KEY", "int": "BIGINT", "real": "DOUBLE PRECISION",
                   "text": 'TEXT COLLATE "C"', "seq": ", seq BIGSERIAL UNIQUE"},
}
RUN_ORDER = {"sqlite": "rowid", "postgresql": "seq"}  # the column that says which run started first


def fill(text: str, dialect: str) -> str:
    return text.format(**TYPES[dialect])


def ddl(dialect: str) -> list[str]:
    """Every CREATE statement of the schema, in order, for ``dialect``."""
    tables = TABLES + (PG_TABLES if dialect == "postgresql" else ())
    out = [f"CREATE TABLE IF NOT EXISTS {name} ({fill(cols, dialect)})" for name, cols in tables]
    out += [f"CREATE INDEX IF NOT EXISTS {ix}" for ix in INDEXES]
    return out


TABLE_NAMES = tuple(name for name, _ in TABLES)
