"""How often netmanifold.find_solution finds a verified point of M = {w : F(w) = y} (issue 9, item 3).

The case grid: widths h in {4, 8, 16}, n in {4, 6, 8, 10, 16, 18, 32, 48} with n <= 3h (so n < p = 3h + 1),
seeds 0, 1, 2, with the data nm.make_data(n, seed) and find_solution(net, x, y, seed): 54 cases.
Usage: .venv/bin/python scripts/find_solution_grid.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import netmanifold as nm

WIDTHS = (4, 8, 16)
POINTS = (4, 6, 8, 10, 16, 18, 32, 48)
SEEDS = (0, 1, 2)


def main() -> int:
    found, total, t0 = 0, 0, time.perf_counter()
    print(f"{'h':>3} {'n':>3} {'seed':>4}  result")
    for h in WIDTHS:
        for n in (n for n in POINTS if n <= 3 * h):
            for seed in SEEDS:
                net = nm.MLP1D(h)
                x, y = nm.make_data(n, seed)
                total += 1
                t = time.perf_counter()
                try:
                    w = nm.find_solution(net, x, y, seed)
                except Exception as exc:  # report whatever stops it
                    print(f"{h:>3} {n:>3} {seed:>4}  none: {type(exc).__name__}: {str(exc)[:90]}")
                    continue
                res = float(np.linalg.norm(nm.residual(net, w, x, y)))
                cond = np.linalg.cond(nm.jacobian(net, w, x))
                ok = res < 1e-10
                found += ok
                print(f"{h:>3} {n:>3} {seed:>4}  {'found' if ok else 'BAD'} ||F(w)-y|| {res:.1e}, cond(DF) "
                      f"{cond:.1e}, {time.perf_counter() - t:.1f} s")
    print(f"found a verified solution in {found} of {total} cases ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
