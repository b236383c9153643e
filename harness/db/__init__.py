"""Where results live: a SQLite file (the embedded default, one bench) or a PostgreSQL database
(the room store, every bench and controller), behind one small SQL layer.

``harness.store.Store`` speaks to either through ``Sql`` (sql.py); ``target.py`` tells a URL
from a path and masks its password in every message; ``schema.py`` is the one schema both
dialects create; ``postgres.py`` imports psycopg only when a ``postgresql://`` URL is used.
"""
