"""Checks the CUDA path of the engine on a machine with a GPU: grid evaluation, training and the ntk lab's width
sweep on ``cuda``.

Run from the repository root: ``PYTHONPATH=. python3 scripts/gpu_check.py [OUT.json]``. Needs torch, numpy
and scikit-image only (no Qt). Prints each check and writes the figures as JSON when a path is given.
Exits non-zero when a check fails.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import torch


def timed(fn, repeats=5):
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    return out, float(np.median(ts) * 1e3)


def main() -> int:
    from models import toy2d
    from models.procrun import ProcessRun
    from models.train import available_devices, run_to_end

    fig: dict = {"torch": torch.__version__, "devices": available_devices()}
    ok = True
    dev = os.environ.get("GPU_CHECK_DEVICE", "cuda:0")  # 'cpu' dry-runs the script without a GPU
    if dev.startswith("cuda") and not torch.cuda.is_available():
        print("CUDA is not available here")
        return 2
    fig["gpu"] = torch.cuda.get_device_name(0) if dev.startswith("cuda") else "none (dry run on cpu)"
    print("GPU:", fig["gpu"], "torch", torch.__version__)

    # 1. grid evaluation on the GPU equals the CPU's, float64
    model, data = toy2d.make_model("tanh"), toy2d.Data([1.0, 2.0], [0.8, 1.2])
    for res in (201, 1601):
        spec = toy2d.GridSpec(3.0, res)
        g_cpu, t_cpu = timed(lambda spec=spec: toy2d.evaluate_grid(model, data, spec, curvature=True))
        g_gpu, t_gpu = timed(lambda spec=spec: toy2d.evaluate_grid(model, data, spec, curvature=True, device=dev))
        diff = float(np.max(np.abs(g_cpu.loss - g_gpu.loss)))
        cdiff = float(np.nanmax(np.abs(g_cpu.min_hessian_eig - g_gpu.min_hessian_eig)))
        fig[f"grid{res}_cpu_ms"], fig[f"grid{res}_cuda_ms"] = t_cpu, t_gpu
        fig[f"grid{res}_max_abs_diff"] = diff
        good = diff < 1e-12 and cdiff < 1e-9
        ok &= good
        print(f"grid {res}x{res} (+curvature): cpu {t_cpu:.2f} ms, cuda {t_gpu:.2f} ms, |loss diff| {diff:.1e}, "
              f"|curv diff| {cdiff:.1e} {'OK' if good else 'FAIL'}")
    sol = toy2d.solution_set(model, data, toy2d.evaluate_grid(model, data, toy2d.GridSpec(3.0, 201), device=dev))
    good = len(sol.points) == 2
    ok &= good
    print("solution set from the cuda grid:", sol.points.round(6).tolist(), "OK" if good else "FAIL")

    # 2. training on cuda: the linear model lands on the projection; cuda and cpu agree
    kw = dict(model_key="linear", expression="", xs=(1.5,), ys=(0.7,), optimizer="gd", lr=0.1, momentum=0.9,
              batch_size=1, steps=5000, seed=0)
    starts = np.array([[2.0, -1.0], [-2.5, 2.5]])
    snaps, result = run_to_end(toy2d.descent(starts=starts, device=dev, **kw))
    proj = np.array([toy2d.projection_onto_linear_solutions(toy2d.Data([1.5], [0.7]), w) for w in starts])
    err = float(np.max(np.linalg.norm(snaps[-1].params - proj, axis=1)))
    fig["cuda_linear_landing_error"] = err
    good = err < 1e-6
    ok &= good
    print(f"cuda descent, linear model: {result.message}; |landing - projection| = {err:.1e}", "OK" if good else "FAIL")
    kw2 = dict(kw, model_key="tanh", ys=(0.8,), xs=(1.0,), steps=2000)
    s_gpu, _ = run_to_end(toy2d.descent(starts=starts, device=dev, **kw2))
    s_cpu, _ = run_to_end(toy2d.descent(starts=starts, device="cpu", **kw2))
    d = float(np.max(np.abs(s_gpu[-1].params - s_cpu[-1].params)))
    fig["cuda_vs_cpu_tanh_param_diff"] = d
    good = d < 1e-9
    ok &= good
    print(f"cuda vs cpu, tanh descent after {s_cpu[-1].step} steps: max |dw| = {d:.1e}", "OK" if good else "FAIL")

    # 3. steps per second of the 2D lab's model for 1, 64 and 4096 trajectories (issue 19: with one host
    #    synchronization per models.train.CUDA_SYNC_EVERY steps, cuda must win from 64 trajectories on)
    for n in (1, 64, 4096):
        st = np.random.default_rng(0).uniform(-3, 3, (n, 2))
        rates = {}
        for side, where in (("cpu", "cpu"), ("dev", dev)):
            gen = toy2d.descent(starts=st, device=where, **dict(kw2, steps=10**9, lr=1e-4))  # (no start converges)
            for _ in range(70):  # warm-up: the first chunk of deferred steps
                next(gen)
            t = time.perf_counter()
            for _ in range(640):
                next(gen)
            rates[side] = 640 / (time.perf_counter() - t)
            gen.close()
        fig[f"train_cpu_steps_per_s_{n}traj"], fig[f"train_cuda_steps_per_s_{n}traj"] = rates["cpu"], rates["dev"]
        faster = rates["dev"] > rates["cpu"]
        judged = n >= 64 and dev.startswith("cuda")
        if judged:
            ok &= faster
        print(f"train_cuda_steps_per_s {n} trajectories: {rates['dev']:.0f} against train_cpu_steps_per_s "
              f"{rates['cpu']:.0f} ({rates['dev'] / rates['cpu']:.2f}x)"
              + ("" if not judged else " OK" if faster else " FAIL (the goal: cuda faster)"))

    # 4. three parameters: the residual cube and a lazy-training descent on the device
    from models import toy3d

    m3, d3 = toy3d.make_model("tanh"), toy2d.Data([1.0, -1.0], [0.5, 0.2])
    spec3 = toy3d.GridSpec3(2.5, 128)
    r_cpu, t3c = timed(lambda: toy3d.residual_grid(m3, d3, spec3))
    r_dev, t3d = timed(lambda: toy3d.residual_grid(m3, d3, spec3, device=dev))
    diff3 = float(np.max(np.abs(r_cpu - r_dev)))
    fig["residual128_cpu_ms"], fig["residual128_dev_ms"], fig["residual128_max_abs_diff"] = t3c, t3d, diff3
    s3, _ = run_to_end(toy3d.descent("tanh", "", (1.0,), (0.5,), [[0.7, -0.4, 1.2]], "gd", 0.05, 0.9, 1, 20000,
                                     dev, 0, alpha=10.0))
    good = diff3 < 1e-12 and s3[-1].loss[0] < 1e-16
    ok &= good
    print(f"residual 128^3: cpu {t3c:.1f} ms, dev {t3d:.1f} ms, |diff| {diff3:.1e}; lazy descent (alpha 10) on dev "
          f"loss {s3[-1].loss[0]:.1e}", "OK" if good else "FAIL")

    # 5. loss surfaces of real MLPs on the device: batched grid vs a per-point loop (41x41, 2000 spiral points)
    from models import directions as dr
    from models import landscape as ls
    from models.nets import MLP, MLPSpec, bce_loss, make_data

    xs, ys = make_data("spirals", 2000, seed=0)
    for label, hidden in (("small", (64, 64)), ("big", (256, 256, 256))):
        net = MLP(MLPSpec(hidden=hidden), seed=0).to(dev).eval()
        xg, yg = xs.to(dev), ys.to(dev)
        c, u, v = dr.params_of(net), dr.random_direction(net, 1), dr.random_direction(net, 2)
        t41 = np.linspace(-1, 1, 41)
        fast, t_fast = timed(lambda: ls.grid_mlp(net, xg, yg, bce_loss, c, u, v, t41, t41), 3)  # noqa: B023
        slow, t_slow = timed(lambda: ls.grid_loop(net, xg, yg, bce_loss, c, u, v, t41, t41), 1)  # noqa: B023
        err = float(np.max(np.abs(fast - slow)))
        fig[f"grid41_{label}_dev_ms"], fig[f"grid41_{label}_dev_loop_ms"] = t_fast, t_slow
        good = err < 1e-4
        ok &= good
        print(f"grid41 {label} on {dev}: batched {t_fast:.0f} ms, loop {t_slow:.0f} ms "
              f"({t_slow / t_fast:.1f}x), max |diff| {err:.1e}", "OK" if good else "FAIL")
    if True:  # the surface lab's whole job (directions, progressive grid, line) on the device
        ck = np.array([dr.flatten(dr.params_of(MLP(MLPSpec(hidden=(16, 16)), seed=s))).numpy() for s in range(5)],
                      dtype=np.float64)
        items = list(ls.surface_job((16, 16), "tanh", "standard", False, "spirals", 500, 0.1, 0, ck[-1], ck[0], ck,
                                    "pca", 1, True, False, 17, 1.0, device=dev))
        good = items[-2][0] == "grid" and np.isfinite(items[-2][3]).all()
        ok &= good
        print(f"surface lab job on {dev}: {len(items)} items, final grid finite", "OK" if good else "FAIL")

    # 6. the app's path: a descent on cuda in a child process, streamed back through the pipe
    pr = ProcessRun("models.toy2d:descent", dict(kw, starts=starts, device=dev))
    got, done = 0, None
    t_end = time.time() + 120
    while time.time() < t_end:
        if pr.poll(0.2):
            kind, payload = pr.recv()
            if kind == "batch":
                got += len(payload)
            elif kind == "done":
                done = payload
                break
            elif kind == "error":
                print("child error:", payload)
                break
    pr.close()
    good = done is not None and got > 10
    ok &= good
    print(f"child process on cuda: {got} snapshots streamed, result: {done.message if done else None}",
          "OK" if good else "FAIL")

    # 7. the ntk lab's width sweep (seven widths 64..4096) on the device: it trains as on the cpu, and its rates
    #    with every live metric every 10 steps and bare (the bench's width_sweep figures: one definition of the
    #    protocol, imported from the bench, which imports no Qt at module level)
    from models.ntk_sweep import sweep_run
    from visualizer.bench import WIDTH_SWEEP, width_sweep_rates

    runs = {where: list(sweep_run(**dict(WIDTH_SWEEP, steps=50), device=where)) for where in ("cpu", dev)}
    a, b = runs["cpu"][-1], runs[dev][-1]
    rel = float(np.max(np.abs(a.loss - b.loss) / np.abs(a.loss)))
    kdiff = float(np.max(np.abs(a.metrics.K - b.metrics.K)) / np.max(np.abs(a.metrics.K)))
    fig["width_sweep_dev_vs_cpu_loss_rel_diff"], fig["width_sweep_dev_vs_cpu_kernel_rel_diff"] = rel, kdiff
    good = (not b.diverged.any() and rel < 1e-3 and kdiff < 1e-3 and np.isfinite(b.metrics.gap).all()
            and np.isfinite(b.metrics.wchange).all())
    ok &= good
    print(f"width sweep on {dev} vs cpu after 50 steps: max rel |loss diff| {rel:.1e}, kernel {kdiff:.1e}",
          "OK" if good else "FAIL")
    rate, bare = width_sweep_rates(dev)
    fig["width_sweep_steps_per_s_dev"], fig["width_sweep_bare_steps_per_s_dev"] = rate, bare
    print(f"width_sweep_steps_per_s_dev: {rate:.0f} steps/s with metrics, width_sweep_bare_steps_per_s_dev: "
          f"{bare:.0f} bare ({100 * rate / bare:.0f}%; the goal on the cpu is at least 70%)")
    # the same sweep (widths up to 4096) on the cpu: cuda must be faster for every sweep with a width >= 1024
    rate_c, bare_c = width_sweep_rates("cpu")
    fig["width_sweep_steps_per_s_cpu"], fig["width_sweep_bare_steps_per_s_cpu"] = rate_c, bare_c
    faster = rate > rate_c and bare > bare_c
    if dev.startswith("cuda"):
        ok &= faster
    print(f"width sweep {dev} / cpu: {rate / rate_c:.2f}x with metrics, {bare / bare_c:.2f}x bare",
          "" if not dev.startswith("cuda") else "OK" if faster else "FAIL (the goal: cuda faster)")
    fig["all_ok"] = bool(ok)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as fh:
            json.dump(fig, fh, indent=2)
    print("ALL OK" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
