"""Compile an integer graph for DIANA ("soma_dory, c"), seed 004's flow without TVM.

    nnc diana --graph two_layers --out build/diana/two_layers/model
    nnc diana --script my_graph.py --out build/my_graph
    nnc diana --list

Layers the digital accelerator supports become DORY kernels (the C functional model in
firmware/diana/hal); the others fall back to C on the RISC-V core with a warning naming the
layer and the constraint. The output directory gets:

    gen/tvmgen_<name>.h, gen/tvmgen_<name>.c   the compiled model (AOT C)
    app/demo.c                                 demo application: samples, expected outputs, check
    placement_report.txt, placement.json       where each layer runs, why, MACs, tiles, cycles

A user script defines `create_model()` returning an nnc Graph built with nnc.builder (and may
define `NAME`). Nothing is written when compilation fails (exit status 2, the error names the
layer and its sizes); a previous build in --out is removed then, so that it is not mistaken for
the current one. --out is replaced as a whole, and only if nnc made it (or it is new or empty).
"""
from __future__ import annotations

import os
import runpy
import shutil
import sys
import time
import traceback
import warnings

import nnc
from nnc import outdir
from nnc.builder import check_graph_name
from nnc.cli import ROOT
from nnc.errors import NncError

NNC_DIR = os.path.dirname(os.path.abspath(nnc.__file__))


def load_graph(args):
    from nnc.ir import Graph
    from nnc.targets.diana.examples import EXAMPLES, example
    if args.graph:
        if args.graph not in EXAMPLES:
            raise NncError(f"unknown example graph {args.graph!r}", "--graph",
                           f"choose one of: {', '.join(EXAMPLES)}")
        return example(args.graph)
    if not os.path.isfile(args.script):
        raise NncError(f"{args.script} does not exist or is not a file", "--script")
    ns = _run_user_code(args.script,
                        lambda: runpy.run_path(args.script, run_name="diana_user_graph"))
    if not callable(ns.get("create_model")):
        raise NncError(f"{args.script} defines no create_model()", "--script",
                       "define create_model() returning a graph made with nnc.builder")
    g = _run_user_code(args.script, ns["create_model"])
    if isinstance(g, tuple) and g:
        g = g[0]
    if not isinstance(g, Graph):
        raise NncError(f"create_model() returned {type(g).__name__}, not an nnc Graph", "--script",
                       "end create_model() with `return make_graph(name, output)`")
    if ns.get("NAME"):
        g.name = check_graph_name(ns["NAME"], f"NAME in {args.script}")
    return g


def _run_user_code(script: str, call):
    """Runs the user's script (or its create_model): a mistake in it is a user error naming the
    script's line; NncError (e.g. a builder parameter) passes through; a failure whose last frame
    is inside nnc is ours and propagates."""
    try:
        return call()
    except NncError:
        raise
    except SyntaxError as e:
        raise NncError(f"{script} is not valid Python: {e.msg}", f"{e.filename}, line {e.lineno}",
                       "fix the syntax error") from None
    except Exception as e:
        frames = traceback.extract_tb(e.__traceback__)
        inside_nnc = frames and os.path.dirname(os.path.abspath(frames[-1].filename)).startswith(
            NNC_DIR)
        if inside_nnc:
            raise
        mine = [f for f in frames if os.path.abspath(f.filename) == os.path.abspath(script)]
        where = f"{script}, line {mine[-1].lineno}" if mine else script
        raise NncError(f"{script} failed: {type(e).__name__}: {e}", where,
                       "fix the script: it must define create_model() returning an nnc Graph"
                       ) from None


def compile_to(graph, out_dir: str, samples: int, seed: int, quiet: bool) -> dict:
    import numpy as np

    from nnc import reference
    from nnc.targets.diana import DianaFallbackWarning, compile_diana
    from nnc.targets.diana.demo import DemoModel, demo_inputs, demo_source

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DianaFallbackWarning)
        build = compile_diana(graph)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if len(graph.outputs) != 1:
        raise NncError(f"{len(graph.outputs)} graph outputs", f"graph {graph.name}",
                       "the demo application checks one output")
    xs = demo_inputs(graph, samples, seed)
    expected = reference.run(graph, xs)[0]

    report = build.report
    build.files["app/demo.c"] = demo_source([DemoModel(build, xs, expected)])
    summary = dict(build.compiled.report, prefix=build.compiled.prefix,
                   arena_bytes=build.compiled.plan.arena_size, l2=build.l2_usage(),
                   demo_samples=samples,
                   expected_nonsaturated=float(np.mean((expected > -128) & (expected < 127))))
    build.files["placement.json"] = outdir.json_text(summary)
    build.write(out_dir, "--out")
    if not quiet:
        print(report, end="")
    print(f"DIANA build of {graph.name}: {out_dir} (report: "
          f"{os.path.join(out_dir, 'placement_report.txt')})")
    return summary


def add_parser(subparsers, name, parents):
    from nnc.cli.main import add_subparser
    ap = add_subparser(
        subparsers, name, parents, __doc__,
        epilog="Example graphs (seed 004): single_layer, two_layers, two_layers_strided "
               "(conv2 strides (1, 2): CPU fallback), two_layers_and_residual. "
               "Build firmware and run it on QEMU with `scons board=diana run`.")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--graph", help="one of seed 004's example graphs")
    src.add_argument("--script", help="a Python file defining create_model() -> nnc Graph")
    ap.add_argument("--out", help="output directory (default build/diana/<name>/model)")
    ap.add_argument("--samples", type=int, default=4,
                    help="input samples embedded in the demo application (default 4)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the demo's random inputs")
    ap.add_argument("--list", action="store_true", help="list the example graphs and exit")
    ap.add_argument("--quiet", action="store_true", help="do not print the placement report")
    ap.set_defaults(run=run)


def run(args) -> int:
    if args.list:
        from nnc.targets.diana.examples import EXAMPLES
        print("\n".join(EXAMPLES))
        return 0
    if not args.graph and not args.script:
        raise NncError("no graph given", "--graph / --script",
                       "give --graph NAME or --script FILE (--list shows the example graphs)")
    if args.samples < 1:
        raise NncError(f"--samples must be at least 1, got {args.samples}", "--samples")
    real_out = None        # set once --out is known to be a folder nnc may replace
    t0 = time.time()
    try:
        graph = load_graph(args)
        out = args.out or os.path.join(ROOT, "build", "diana", graph.name, "model")
        real_out = outdir.check_target(out, "--out")
        compile_to(graph, out, args.samples, args.seed, args.quiet)
    except NncError:
        if real_out and os.path.isdir(real_out) and outdir.is_ours(real_out):
            shutil.rmtree(real_out)   # a stale build must not pass for this one
        raise
    if not args.quiet:
        print(f"done in {time.time() - t0:.2f} s")
    return 0
