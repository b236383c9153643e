"""ABFT operands and checks: every single flipped bit of any result element is caught and named."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.abft import (
    RESULT_INT_LIMIT,
    Comparison,
    bad_rows,
    compare_rows,
    entry_max,
    flipped_bits,
    json_number,
    make_operands,
)

RESULT = {"fp16": np.float32, "bf16": np.float32, "fp32": np.float32, "fp64": np.float64}
UINT = {4: np.uint32, 8: np.uint64}


@pytest.mark.parametrize("dtype", ["fp16", "bf16", "fp32", "fp64"])
def test_operands_are_exact_and_bounded(dtype: str) -> None:
    ops = make_operands(dtype, 32, 48, 40, np.random.default_rng(3))
    assert ops.reference.max() <= RESULT_INT_LIMIT and ops.reference.min() >= 48  # positive, no zeros
    a, b = ops.a.astype(np.float64), ops.b.astype(np.float64)
    assert np.array_equal(a @ b, ops.reference)
    assert np.array_equal(ops.row_sums, ops.reference.sum(axis=1))
    c = ops.reference.astype(RESULT[dtype])
    assert bad_rows(c, ops).size == 0


@pytest.mark.parametrize("dtype", ["fp16", "bf16", "fp32", "fp64"])
def test_every_single_bit_flip_is_caught_with_its_bit(dtype: str) -> None:
    ops = make_operands(dtype, 16, 64, 16, np.random.default_rng(7))
    clean = ops.reference.astype(RESULT[dtype])
    nbits = clean.itemsize * 8
    for bit in range(nbits):
        c = clean.copy()
        c.reshape(-1).view(UINT[c.itemsize])[5 * 16 + 9] ^= UINT[c.itemsize](1 << bit)
        rows = bad_rows(c, ops)
        assert rows.tolist() == [5], f"bit {bit} not caught by the row checksum"
        cmp = Comparison()
        assert compare_rows(c, ops, rows, 3, 8, cmp) == 1
        e = cmp.examples[0]
        assert (e.row, e.col, e.bits, e.product) == (5, 9, (bit,), 3)
        assert e.expected == clean[5, 9]


def test_full_compare_counts_all_and_keeps_a_few() -> None:
    ops = make_operands("fp32", 8, 8, 8, np.random.default_rng(1))
    c = ops.reference.astype(np.float32)
    c[:, 2] = np.nan
    cmp = Comparison()
    assert compare_rows(c, ops, None, 0, 3, cmp) == 8
    assert cmp.wrong == 8 and cmp.nonfinite == 8 and len(cmp.examples) == 3
    assert all(e.nonfinite for e in cmp.examples)
    assert cmp.examples[0].to_evidence()["actual"] == "nan"


def test_entry_max_and_helpers() -> None:
    assert entry_max("fp16", 64) == 16
    assert entry_max("fp32", 1 << 20) == 2
    with pytest.raises(ValueError, match="unknown datatype"):
        entry_max("int4", 64)
    with pytest.raises(ValueError, match="inner dimension"):
        entry_max("fp32", 0)
    assert flipped_bits(1.0, -1.0, np.dtype(np.float32)) == (31,)
    assert json_number(float("inf")) == "inf" and json_number(3.0) == 3 and json_number(2.5) == 2.5
