"""Exact operands and algorithm-based fault tolerance for the burn-in's matrix products.

Huang and Abraham's ABFT (IEEE Trans. Computers, 1984): the row sums of ``C = A @ B`` must
equal ``A @ (B @ 1)``, which costs O(mn) against the product's O(mnk), so every product can be
checked. Operands are small positive integers chosen so that every partial sum is an integer
below 2**22: then the product is exact in every datatype we test (fp16/bf16 inputs hold such
integers exactly, fp32 accumulation rounds nothing, even tensor-core adders that truncate instead
of rounding lose nothing), so "wrong" means wrong, with no tolerance to hide a low-bit flip.
Positive entries keep every result non-zero (a flipped sign bit of 0 would be invisible) and the
results within a narrow range, which makes float64 row sums exact too: any single flipped bit of
an fp32 result changes its row sum. fp64 results add an integrality test, since a flip in their
low mantissa bits is below the row sum's resolution but makes the value non-integral.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

DTYPES = ("fp16", "bf16", "fp32", "fp64")
# largest integer the datatype holds exactly (inputs), and the bound for every result
INPUT_INT_LIMIT = {"fp16": 2048, "bf16": 256, "fp32": 1 << 24, "fp64": 1 << 53}
RESULT_INT_LIMIT = 1 << 22
MAX_ENTRY = 16
# how operands travel to a device: numpy has no bfloat16, bf16 values go as float32
HOST_DTYPES = {"fp16": np.float16, "bf16": np.float32, "fp32": np.float32, "fp64": np.float64}
_UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def entry_max(dtype: str, k: int, result_limit: int = RESULT_INT_LIMIT) -> int:
    """Largest operand entry ``s`` with entries in [1, s] keeping every result <= result_limit."""
    if dtype not in INPUT_INT_LIMIT:
        raise ValueError(f"unknown datatype {dtype!r} (have: {', '.join(DTYPES)})")
    if k < 1 or k > result_limit:
        raise ValueError(f"inner dimension {k} cannot give exact {dtype} products (1 to {result_limit})")
    return max(1, min(MAX_ENTRY, INPUT_INT_LIMIT[dtype], math.isqrt(result_limit // k)))


@dataclass(frozen=True)
class Operands:
    """One input pair with what its product must be."""

    dtype: str
    a: np.ndarray  # host arrays in HOST_DTYPES[dtype]
    b: np.ndarray
    reference: np.ndarray  # the exact product, float64
    row_sums: np.ndarray  # float64, exact

    @property
    def flops(self) -> float:
        m, k = self.a.shape
        return 2.0 * m * k * self.b.shape[1]


def make_operands(dtype: str, m: int, k: int, n: int, rng: np.random.Generator,
                  result_limit: int = RESULT_INT_LIMIT) -> Operands:
    s = entry_max(dtype, k, result_limit)
    a = rng.integers(1, s + 1, size=(m, k)).astype(np.float64)
    b = rng.integers(1, s + 1, size=(k, n)).astype(np.float64)
    ref = a @ b
    return Operands(dtype, a.astype(HOST_DTYPES[dtype]), b.astype(HOST_DTYPES[dtype]), ref, ref.sum(axis=1))


@dataclass(frozen=True)
class ElementError:
    """One wrong element of one product."""

    dtype: str
    product: int  # index of the product in its engine's run (0-based)
    row: int
    col: int
    expected: float
    actual: float
    bits: tuple[int, ...]  # bits that differ in the result's encoding (bit 0 = LSB)
    nonfinite: bool = False

    def to_evidence(self) -> dict[str, object]:
        return {
            "dtype": self.dtype, "product": self.product, "row": self.row, "col": self.col,
            "expected": json_number(self.expected), "actual": json_number(self.actual),
            "bits": list(self.bits),
        }


def json_number(x: float) -> float | int | str:
    """A value a JSON document can hold: NaN/Inf as text, integral floats as ints."""
    if not math.isfinite(x):
        return repr(x)
    return int(x) if x == int(x) and abs(x) < 2**53 else x


def flipped_bits(expected: float, actual: float, result_dtype: np.dtype) -> tuple[int, ...]:
    """Bits that differ between two values in ``result_dtype``'s encoding."""
    dt = np.dtype(result_dtype)
    u = _UINT[dt.itemsize]
    e = np.array([expected], dtype=dt).view(u)[0]
    a = np.array([actual], dtype=dt).view(u)[0]
    x = int(e ^ a)
    return tuple(i for i in range(dt.itemsize * 8) if x >> i & 1)


def bad_rows(c: np.ndarray, ops: Operands) -> np.ndarray:
    """Indices of rows whose checksum fails (the per-product ABFT check)."""
    sums = c.sum(axis=1, dtype=np.float64)
    bad = ~(sums == ops.row_sums)  # NaN/Inf results fail here too
    if c.dtype.itemsize >= 8:
        bad |= (c != np.rint(c)).any(axis=1)
    return np.flatnonzero(bad)


@dataclass
class Comparison:
    wrong: int = 0  # wrong elements found
    nonfinite: int = 0  # of which NaN or Inf
    examples: list[ElementError] = field(default_factory=list)


def compare_rows(c: np.ndarray, ops: Operands, rows: np.ndarray | None, product: int,
                 limit: int, out: Comparison) -> int:
    """Compare rows of ``c`` bit for bit with the reference; append up to ``limit`` examples.

    ``rows`` None compares the whole product (the periodic full check). Returns the number of
    wrong elements found.
    """
    ref = ops.reference.astype(c.dtype)
    u = _UINT[c.dtype.itemsize]
    sel = slice(None) if rows is None else rows
    got = c[sel]
    want = ref[sel]
    diff = got.view(u) != want.view(u)
    rr, cc = np.nonzero(diff)
    row_ids = np.arange(c.shape[0])[sel]
    for r, col in zip(rr.tolist(), cc.tolist(), strict=True):
        if len(out.examples) >= limit:
            break
        actual = float(got[r, col])
        expected = float(want[r, col])
        out.examples.append(ElementError(
            ops.dtype, product, int(row_ids[r]), col, expected, actual,
            flipped_bits(expected, actual, c.dtype), not math.isfinite(actual),
        ))
    out.wrong += len(rr)
    out.nonfinite += int(np.count_nonzero(~np.isfinite(got[rr, cc])))
    return len(rr)
