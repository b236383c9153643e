"""The bench TUI: a Textual client of the engine's event stream.

Nothing outside this package imports it (the core, drivers and stages never import textual);
``burnin tui`` reaches it through ``harness.tui.app.run_tui``.
"""
