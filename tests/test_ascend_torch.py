"""burnin's own checks through torch (the torch_npu path), run on torch's CPU device: the same
handle code an Ascend host runs on ``npu:N``. Skipped where torch is not installed."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from drivers.abft import bad_rows, make_operands
from drivers.api import BackendUnavailable, Pattern
from drivers.ascend.runtime import open_runtime

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
WHERE = {"npu_id": 3, "chip_id": 0, "logic_id": 0}


@pytest.fixture(scope="module")
def rt():  # type: ignore[no-untyped-def]
    r = open_runtime(["drivers.ascend.torch_npu", "--device-type", "cpu", "--memory-mib", "4"], WHERE)
    yield r
    r.close()


def test_memory_scan_finds_a_corrupted_byte_on_the_device(rt) -> None:  # type: ignore[no-untyped-def]
    mem = rt.handle("memory")
    assert mem.size == 4 << 20
    ones, zeros = Pattern(b"\xff"), Pattern(b"\x00")
    mem.write_pattern(0, mem.size, zeros)
    assert mem.march_element(0, mem.size, zeros, ones).total == 0
    mem.buf[123457] = 0xF7  # a cell that lost bit 3 behind the scan's back
    m = mem.march_element(0, mem.size, ones, zeros, descending=True)
    assert (m.total, list(m.address), int(m.got[0]), int(m.expected[0])) == (1, [123457], 0xF7, 0xFF)
    assert m.bit_counts[3] == 1 and m.bit_counts.sum() == 1
    mem.buf[99] = 0x08  # the march wrote zeros over everything; a bit stuck at one now
    r = mem.verify_repeat(0, mem.size, zeros, repeats=2)
    assert r.total == 2 and r.reads == 2 and list(r.address) == [99] and list(r.hits) == [2]
    mem.write(10, np.arange(5, dtype=np.uint8))
    assert list(mem.read(10, 5)) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("dtype", ["fp16", "fp32"])
def test_products_are_exact_for_the_verified_burn(rt, dtype: str) -> None:  # type: ignore[no-untyped-def]
    ops = make_operands(dtype, 48, 256, 40, np.random.default_rng(1))
    c = rt.handle("compute").matmul(ops.a, ops.b, dtype=dtype)
    assert c.dtype == np.float32 and np.array_equal(c, ops.reference)
    assert bad_rows(c, ops).size == 0
    rep = rt.handle("compute").load(0.05)
    assert rep.flops > 0 and rep.seconds >= 0.05


def test_transfers_are_timed(rt) -> None:  # type: ignore[no-untyped-def]
    x = rt.handle("transfer")
    assert x.host_to_device(1 << 20) > 0 and x.device_to_host(1 << 20) > 0
    with pytest.raises(ValueError):
        x.host_to_device(0)


def test_npu_without_torch_npu_says_what_to_install() -> None:
    if importlib.util.find_spec("torch_npu") is not None:
        pytest.skip("torch_npu is installed here")
    with pytest.raises(BackendUnavailable, match="torch_npu is not installed: install torch and the torch_npu"):
        open_runtime(["drivers.ascend.torch_npu"], WHERE)
