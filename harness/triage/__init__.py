"""``burnin triage``: what the files a card arrived with say about it (docs/triage.md)."""
