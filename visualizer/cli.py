"""The ``losslab`` command: launch the app on a lab, or run the benchmarks (``losslab bench``).

Kept light: only argparse at import time, so the window can paint before the heavy modules load.
"""

from __future__ import annotations

import argparse
import sys
import time

_T0 = time.perf_counter()


def _lab_list() -> str:
    from visualizer.labs import LABS

    return "\n".join(f"  {k:<12} {info.title}: {info.summary}" for k, info in LABS.items())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="losslab",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="losslab: see why neural networks train and generalize, live in OpenGL.",
        epilog="labs:\n" + _lab_list() + "\n\nother commands:\n"
               "  losslab bench [--json PATH] [--only NAME,...]   run the benchmarks\n"
               "  losslab surface --model SPEC --data SPEC --grid N --out FILE.h5   a loss surface, headless\n"
               "  losslab FILE.h5   open a surface file (this app's or the reference loss-landscape tool's)\n"
               "  losslab record SCENE.toml -o OUT.mp4|.gif [--size WxH] [--fps N]   render a scene, headless\n"
               "  losslab SCENE.toml   preview a scene: play, scrub, add keyframes, render\n"
               "  losslab TOUR.toml (or --tour TOUR.toml)   present a lecture tour full screen\n"
               "  losslab record TOUR.toml -o course.mp4 [--chapters 2-4]   render a tour, with chapters and captions\n\n"
               "keys: Space start/pause, S single step, R reset, Ctrl+S screenshot, Ctrl+R record, Ctrl+K add keyframe, "
               "Ctrl+Shift+S save scene, Ctrl+O open scene, Ctrl+Shift+O open tour, F1 help",
    )
    p.add_argument("--lab", help="open this lab (default: the last one used)")
    p.add_argument("--model", default=None, metavar="SPEC",
                   help="surface lab: your own model, package.module:factory or path/file.py:factory returning "
                        "(module, loss_fn, (x, y))")
    p.add_argument("--device", default=None, help="compute device: cpu, cuda:0, ... (default: cuda if present)")
    p.add_argument("--size", default=None, help="window size WIDTHxHEIGHT, e.g. 1600x900")
    p.add_argument("--screenshot", metavar="PNG", help="open, let the lab settle, save a window screenshot, quit")
    p.add_argument("--tour", metavar="FILE", help="present a tour file (TOML) full screen: presenter mode (Right/Left "
                   "step through it, B blanks, a number jumps to a chapter, Esc leaves)")
    p.add_argument("--report-startup", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from models.procrun import keep_torch_cache_out_of_tmp

    keep_torch_cache_out_of_tmp()  # (no folder of torch's left in the temporary directory by any command)
    if argv and argv[0] == "bench":
        from visualizer.bench import main as bench_main

        code = bench_main(argv[1:])
        from models.procrun import end_all

        end_all()  # a benchmark's forkserver and children end with it (os._exit skips multiprocessing's exit)
        sys.stdout.flush()
        sys.stderr.flush()
        import os

        os._exit(code)  # skip Qt's teardown of GL windows at exit (see app.run_app)
    if argv and argv[0] == "record":
        import os

        # this process supervises: it starts the renderer as a child (and, without a display, an X server of
        # its own for it), stops both on SIGTERM/SIGINT and removes what they leave (see recorder.supervise)
        from visualizer.recording.recorder import cli as record_cli
        from visualizer.recording.tour import is_tour

        if any(a.lower().endswith(".toml") and is_tour(a) for a in argv[1:]):  # chapters, captions, resume
            from visualizer.recording.tour_render import cli as record_cli

        code = record_cli(argv[1:])
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # skip Qt's teardown of GL windows at exit (see app.run_app)
    if argv and argv[0] == "surface":
        from models.surface_job import main as surface_main

        return surface_main(argv[1:])
    open_path = scene_path = None
    if argv and argv[0].lower().endswith(".toml"):
        from visualizer.recording.tour import is_tour

        if is_tour(argv[0]):  # `losslab TOUR.toml`: presented, as --tour does
            argv = ["--tour", argv[0], *argv[1:]]
    if argv and argv[0].lower().endswith(".toml"):
        scene_path = argv.pop(0)
        from visualizer.labs import LABS
        from visualizer.recording.scene import SceneError, load_scene

        try:
            scene = load_scene(scene_path, LABS)  # fail early, with file, line and field, before any window
        except SceneError as exc:
            print(f"losslab: {exc}", file=sys.stderr)
            return 2
        if "--lab" not in argv:
            argv += ["--lab", scene.lab]
    if argv and argv[0].lower().endswith((".h5", ".hdf5")):
        open_path = argv.pop(0)
        from models.surface_io import SurfaceFileError
        from visualizer.labs.surface import read_for_views

        try:
            read_for_views(open_path)  # fail early, with the file and what is wrong, before any window
        except SurfaceFileError as exc:
            print(f"losslab: {exc}", file=sys.stderr)
            return 2
        if "--lab" not in argv:
            argv += ["--lab", "surface"]
    args = build_parser().parse_args(argv)
    if args.screenshot:
        from models.export import check_output_path

        # before any window: a path that cannot be written fails now, not after the lab has run
        problem = check_output_path(args.screenshot, (".png", ".jpg", ".jpeg"), "--screenshot")
        if problem:
            print(f"losslab: {problem}", file=sys.stderr)
            return 2
    from visualizer.labs import LABS

    if args.lab and args.lab not in LABS:
        print(f"losslab: unknown lab '{args.lab}'. Labs:\n{_lab_list()}", file=sys.stderr)
        return 2
    size = None
    if args.size:
        try:
            w, h = (int(v) for v in args.size.lower().split("x"))
            size = (w, h)
        except ValueError:
            print(f"losslab: --size wants WIDTHxHEIGHT, not '{args.size}'", file=sys.stderr)
            return 2
    from visualizer.app import run_app

    if args.tour:
        from visualizer.tour_presenter import main as tour_main

        return tour_main(args.tour, run_app, device=args.device)
    if args.model:
        from models.surface_job import JobError, load_factory

        try:
            load_factory(args.model)  # fail early, with the reason, before any window opens
        except JobError as exc:
            print(f"losslab: {exc}", file=sys.stderr)
            return 2
        args.lab = args.lab or "surface"
    return run_app(lab=args.lab, device=args.device, size=size, screenshot=args.screenshot,
                   report_startup=args.report_startup, t0=_T0, open_path=open_path, scene_path=scene_path,
                   user_model=args.model)


if __name__ == "__main__":
    raise SystemExit(main())
