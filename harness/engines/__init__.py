"""Optional engines that can take LocalEngine's place (harness.engine.Engine).

Each lives in its own module and imports its framework lazily, so the core imports without it:
``harness.engines.ray_engine.RayEngine`` runs cards on a Ray cluster (``pip install '.[distributed]'``).
"""
