"""What a verified-product run reports, and the protocol a device offers to verify on its own side.

Device-side implementations (``drivers.cuda.compute``) return these and the burn stage consumes
them. They live with the drivers so that a device backend never imports a stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from drivers.abft import ElementError

MAX_EXAMPLES = 8  # wrong elements kept per batch (the count is always complete)


@dataclass
class BatchReport:
    """What one ``run`` did. ``seconds`` is device time in the products, verification excluded."""

    dtype: str
    products: int = 0
    flops: float = 0.0
    seconds: float = 0.0
    full_checks: int = 0
    bad_products: int = 0
    wrong_elements: int = 0
    nonfinite: int = 0  # wrong elements that are NaN or Inf
    errors: list[ElementError] = field(default_factory=list)


@runtime_checkable
class VerifiedGemm(Protocol):
    dtype: str
    size: int

    def run(self, products: int, timeout_s: float) -> BatchReport: ...

    def close(self) -> None: ...


@runtime_checkable
class VerifiedGemmProvider(Protocol):
    """A ComputeHandle that verifies products on the device itself."""

    def verified_gemm(self, dtype: str, size: int | None, full_check_every: int, seed: int) -> VerifiedGemm: ...
