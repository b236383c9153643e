"""The room: every bench's cards as the store holds them, served live (``burnin serve``) as a web
page and as Prometheus metrics. ``state.py`` reads the store, ``pages.py`` renders HTML,
``exposition.py`` writes the metrics text, ``server.py`` serves them (standard library only)."""
