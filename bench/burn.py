"""Benchmark (not a test): burn-in throughput with its verification vs the bare product.

Runs the same-size products on the same operands twice, alternating rounds so both see the same
machine state: bare (no check at all) and through the burn-in's verified engine (ABFT row
checksums on every product, a full reference comparison every ``--full-every``). Reports both
rates and their ratio; the goal on a GPU is >= 0.95.

    python -m bench.burn                       # host CPU (numpy), fp32, 1024
    python -m bench.burn --backend cuda --dtype fp16 --size 8192 --products 200
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np

from drivers.api import WallClock


def _host(args: argparse.Namespace) -> tuple[Any, Any]:
    from stress.compute.engine import HostGemmEngine
    from stress.compute.host import HostCompute

    compute = HostCompute()
    engine = HostGemmEngine(compute, WallClock(), args.dtype, args.size, args.full_every,
                            np.random.default_rng(args.seed))

    def bare(n: int) -> tuple[float, float]:
        pool = engine._pool  # same operands as the verified run
        t0 = time.perf_counter()
        for i in range(n):
            ops = pool[i % len(pool)]
            compute.matmul(ops.a, ops.b, dtype=args.dtype)
        return 2.0 * args.size**3 * n, time.perf_counter() - t0

    return engine, bare


def _cuda(args: argparse.Namespace) -> tuple[Any, Any]:
    from drivers.cuda.compute import CudaCompute

    engine = CudaCompute(args.device).verified_gemm(args.dtype, args.size, args.full_every, args.seed)
    return engine, lambda n: engine.bare(n, args.timeout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=("host", "cuda"), default="host")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--products", type=int, default=20, help="per round and kind")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--full-every", type=int, default=50)
    ap.add_argument("--device", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    try:
        engine, bare = (_cuda if args.backend == "cuda" else _host)(args)
    except Exception as e:  # noqa: BLE001 - a benchmark reports why it cannot run, in one line
        print(f"bench/burn: cannot run on {args.backend}: {e}", file=sys.stderr)
        return 3
    size = engine.size
    engine.run(2, args.timeout)  # warm-up: kernels, caches, clocks
    bare(2)
    b_flops = b_s = v_flops = v_s = 0.0
    wrong = 0
    for r in range(args.rounds):
        for kind in (("bare", "burn") if r % 2 == 0 else ("burn", "bare")):  # alternate: no order bias
            if kind == "bare":
                f, s = bare(args.products)
                b_flops, b_s = b_flops + f, b_s + s
                continue
            t0 = time.perf_counter()
            rep = engine.run(args.products, args.timeout)
            v_s += time.perf_counter() - t0
            v_flops += rep.flops
            wrong += rep.wrong_elements
    bare_tf = b_flops / b_s / 1e12
    burn_tf = v_flops / v_s / 1e12
    print(json.dumps({
        "backend": args.backend, "dtype": args.dtype, "size": size,
        "products": args.products * args.rounds, "full_check_every": args.full_every,
        "bare_tflops": round(bare_tf, 5), "burn_tflops": round(burn_tf, 5),
        "ratio": round(burn_tf / bare_tf, 4), "wrong_elements": wrong,
    }))
    engine.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
