"""CUDA implementations of the device API's accelerator handles (memory, compute, transfer).

Each module registers a handle factory with ``drivers.registry`` and imports CuPy only when a
handle is built, so importing this package is safe on a host without a GPU.
"""
