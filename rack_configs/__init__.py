"""Example rack configs and the bundled plans (``plans/``), shipped as package data."""
