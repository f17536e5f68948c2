"""The bench's own machinery for issue 19's figures (its timings are never asserted: only what they measure)."""

import statistics


def test_a_new_surfaces_own_cost_is_timed_for_both_items(qtbot):
    from visualizer import bench

    results: dict = {}
    bench.bench_surface(results, {"surface_new_201_ms", "surface_new_201_cpu_ms"})
    assert set(results) == {"surface_new_201_ms", "surface_new_201_cpu_ms"}
    assert all(0 < v < 10_000 for v in results.values())


def test_the_stream_bench_takes_streaming_and_headless_windows_in_turns(qtbot, monkeypatch):
    from visualizer import bench

    monkeypatch.setattr(bench, "STREAM_WINDOW_S", 0.3)
    monkeypatch.setattr(bench, "HEADLESS_WINDOW_S", 0.2)
    results: dict = {}
    bench.bench_stream(results, {"stream_steps_per_s", "headless_steps_per_s", "gui_max_stall_ms",
                                 "stream_share_pct"}, windows=3)
    pairs = results["_stream_windows"]
    assert len(pairs) == 3 and all(p > 0 for p in pairs)
    assert results["stream_share_pct"] == 100 * statistics.median(pairs)
    assert results["stream_steps_per_s"] > 0 and results["headless_steps_per_s"] > 0
    assert results["gui_max_stall_ms"] >= 0


def test_a_failing_benchmark_is_named_and_the_others_still_run(monkeypatch, capsys):
    from visualizer import bench

    def broken(results, wanted):
        raise ValueError("settings.steps: 1e+08 is out of range")

    def fine(results, wanted):
        results["startup_ms"] = 321.0

    monkeypatch.setattr(bench, "GROUPS", [({"manifold_walk_steps_per_s"}, broken), ({"startup_ms"}, fine)])
    assert bench.main(["--only", "manifold_walk_steps_per_s,startup_ms"]) == 1
    out = capsys.readouterr()
    assert "broken failed (ValueError: settings.steps: 1e+08 is out of range)" in out.err
    assert "startup_ms" in out.out and "321.00" in out.out and "manifold_walk_steps_per_s " not in out.out
