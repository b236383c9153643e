"""Benchmark (not a test): burn-in throughput with its verification vs the bare product.

Runs the same-size products on the same operands and buffers twice, alternating rounds so both
see the same machine state (clocks, heat): bare (no check at all) and through the burn-in's
verified engine (ABFT row checksums on every product, a full reference comparison every
``--full-every``), each timed by the wall clock around its queued work and its wait. Prints
both rates and their ratio per datatype, one JSON line each; the goal on a GPU is >= 0.95 for
every datatype.

    python -m bench.burn                                  # host CPU (numpy), fp32, 1024
    python -m bench.burn --backend cuda                   # every datatype at the engine's size
    python -m bench.burn --backend cuda --dtype fp16 --size 8192 --products 40
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from drivers.api import WallClock
from drivers.verified_gemm import VerifiedGemm

GOAL = 0.95
CUDA_DTYPES = ("fp16", "bf16", "fp32", "fp64")
TENSOR = ("fp16", "bf16")  # fast products: more of them per round


def measure(engine: VerifiedGemm, bare: Callable[[int], tuple[float, float]], products: int, rounds: int,
            timeout_s: float) -> dict[str, Any]:
    """Verified against bare throughput on one engine: rounds alternate which goes first."""
    engine.run(2, timeout_s)  # warm-up: kernels, caches, clocks
    bare(2)
    b_flops = b_s = v_flops = v_s = 0.0
    wrong = 0
    for r in range(rounds):
        for kind in (("bare", "burn") if r % 2 == 0 else ("burn", "bare")):  # alternate: no order bias
            if kind == "bare":
                f, s = bare(products)
                b_flops, b_s = b_flops + f, b_s + s
                continue
            t0 = time.perf_counter()
            rep = engine.run(products, timeout_s)
            v_s += time.perf_counter() - t0
            v_flops += rep.flops
            wrong += rep.wrong_elements
    bare_tf = b_flops / b_s / 1e12
    burn_tf = v_flops / v_s / 1e12
    return {"dtype": engine.dtype, "size": engine.size, "products": products * rounds,
            "bare_tflops": round(bare_tf, 5), "burn_tflops": round(burn_tf, 5), "ratio": round(burn_tf / bare_tf, 4),
            "wrong_elements": wrong, "goal": GOAL, "ok": burn_tf / bare_tf >= GOAL and wrong == 0}


def cuda(device: int, dtype: str, size: int | None = None, products: int | None = None, rounds: int = 3,
         full_every: int = 50, timeout_s: float = 60.0, seed: int = 1) -> dict[str, Any]:
    """One datatype on CUDA device ``device`` (bench/first_contact.py uses this too)."""
    from drivers.cuda.compute import CudaCompute

    comp = CudaCompute(device)
    engine = comp.verified_gemm(dtype, size, full_every, seed)
    try:
        n = products or (40 if dtype in TENSOR else 12)
        return measure(engine, lambda k: engine.bare(k, timeout_s), n, rounds, timeout_s)
    finally:
        engine.close()
        comp.close()


def _host(args: argparse.Namespace, dtype: str) -> dict[str, Any]:
    from stress.compute.engine import HostGemmEngine
    from stress.compute.host import HostCompute

    compute = HostCompute()
    engine = HostGemmEngine(compute, WallClock(), dtype, args.size, args.full_every, np.random.default_rng(args.seed))

    def bare(n: int) -> tuple[float, float]:
        pool = engine._pool  # same operands as the verified run
        t0 = time.perf_counter()
        for i in range(n):
            ops = pool[i % len(pool)]
            compute.matmul(ops.a, ops.b, dtype=dtype)
        return 2.0 * engine.size**3 * n, time.perf_counter() - t0

    try:
        return measure(engine, bare, args.products or 20, args.rounds, args.timeout)
    finally:
        engine.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=("host", "cuda"), default="host")
    ap.add_argument("--dtype", default=None, help="one datatype (default: fp32 on the host, all four on CUDA)")
    ap.add_argument("--size", type=int, default=None, help="square products (default: 1024 host, the engine's on CUDA)")
    ap.add_argument("--products", type=int, default=None, help="per round and kind")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--full-every", type=int, default=50)
    ap.add_argument("--device", type=int, default=0, help="CUDA device ordinal")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    ok = True
    if args.backend == "host":
        args.size = args.size or 1024
        dtypes: tuple[str, ...] = (args.dtype or "fp32",)
    else:
        dtypes = (args.dtype,) if args.dtype else CUDA_DTYPES
    for dtype in dtypes:
        try:
            out = (_host(args, dtype) if args.backend == "host" else
                   cuda(args.device, dtype, args.size, args.products, args.rounds, args.full_every, args.timeout,
                        args.seed))
        except Exception as e:  # noqa: BLE001 - a benchmark reports why it cannot run, in one line
            print(f"bench/burn: cannot run {dtype} on {args.backend}: {type(e).__name__}: {e}", file=sys.stderr)
            return 3
        ok &= bool(out["ok"])
        print(json.dumps({"backend": args.backend, "full_check_every": args.full_every, **out}), flush=True)
    return 0 if ok or args.backend == "host" else 1


if __name__ == "__main__":
    raise SystemExit(main())
