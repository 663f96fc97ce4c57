"""Plots of compiled models, written as PNG next to the build.

  memory map   arena offset (y) over execution step (x) of one compiled model: one bar per
               tensor the planner placed in the arena, from the step that writes it to the last
               step that reads it; the arena size (the highest byte any tensor reaches) and the
               step where the most bytes are live are marked.
  footprint    per model: code and weights (flash) and the arena (RAM) against the board's flash
               and RAM. Code is the .text of the generated C compiled for the Cortex-M7
               with the firmware's flags (nnc.toolchains), weights are its .rodata; sizes are cached in
               build/plots/.size-cache.json. Board sizes come from the MEMORY block of
               firmware/riot/board/<board>/linker.ld, the script the firmware links with.

    nnc plots memory-map lenet5                  -> build/plots/lenet5_memory_map.png
    nnc plots footprint                          -> build/plots/footprint_stm32f746g-disco.png
    nnc plots all                                -> both, for every model in build/gen/c

Inputs are the build's model.json files (build/gen/<kernels>/<model>/model.json); build them
with `./scons host`. Exit status: 0 written, 2 a usage error (missing build, unknown model).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

from nnc import toolchains as tc
from nnc.cli import ROOT
from nnc.errors import NncError
from nnc.reports import linker
from nnc.reports.sizes import section_sizes

BUILD = os.path.join(ROOT, "build")
DEFAULT_OUT = os.path.join(BUILD, "plots")
DEFAULT_BOARD = "stm32f746g-disco"
BOARD_DIR = tc.CORTEX_M7_BOARD_DIR


class PlotError(NncError):
    """A problem the user can fix (missing build output, unknown model or board)."""


# ---- inputs ------------------------------------------------------------------------------

def gen_dir(model: str, kernels: str = "c") -> str:
    return os.path.join(BUILD, "gen", kernels, model)


def load_model_json(model_or_path: str, kernels: str = "c") -> dict:
    path = model_or_path if model_or_path.endswith(".json") else os.path.join(
        gen_dir(model_or_path, kernels), "model.json")
    if not os.path.isfile(path):
        raise PlotError(f"{path} is missing: build the model first (./scons host model={model_or_path})")
    with open(path) as f:
        data = json.load(f)
    for key in ("buffers", "arena_bytes", "layers"):
        if key not in data:
            raise PlotError(f"{path}: no {key!r}; re-export the model with the current compiler")
    return data


def built_models(kernels: str = "c") -> list:
    root = os.path.join(BUILD, "gen", kernels)
    if not os.path.isdir(root):
        return []
    return sorted(m for m in os.listdir(root) if os.path.isfile(os.path.join(root, m, "model.json")))


def board_memory(board: str = DEFAULT_BOARD) -> dict:
    """{'flash': bytes, 'ram': bytes, 'stack': bytes, 'source': path} from the board's linker script."""
    path = tc.linker_script(board)
    if not os.path.isfile(path):
        known = sorted(d for d in os.listdir(BOARD_DIR) if os.path.isfile(tc.linker_script(d))) \
            if os.path.isdir(BOARD_DIR) else []
        raise PlotError(f"no linker script for board {board!r} ({path}); boards: {', '.join(known) or 'none'}")
    try:
        mem = linker.board_memory(board, path)
    except ValueError as e:
        raise PlotError(str(e)) from None
    return {"flash": mem["flash"][1], "ram": mem["ram"][1], "stack": mem["stack"],
            "source": os.path.relpath(path, ROOT)}


# ---- memory map --------------------------------------------------------------------------

def live_bytes(model: dict) -> list:
    """Bytes of arena tensors live at each step (the planner's lower bound is the maximum)."""
    steps = max([len(model["layers"])] + [b["last_step"] + 1 for b in model["buffers"]])
    return [sum(b["size"] for b in model["buffers"] if b["first_step"] <= s <= b["last_step"])
            for s in range(steps)]


def memory_map(model_or_path: str, out_png: str | None = None, kernels: str = "c") -> dict:
    """Draw the memory map; returns {'png', 'peak', 'arena_bytes', 'peak_step', 'max_live', 'bars'}.
    'peak' is measured on the drawn bars (highest top edge), so a test can compare it with
    the planner's arena size."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    model = load_model_json(model_or_path, kernels)
    name = model.get("name", os.path.basename(os.path.dirname(model_or_path)) or model_or_path)
    out_png = out_png or os.path.join(DEFAULT_OUT, f"{name}_memory_map.png")
    layers = model["layers"]
    buffers = model["buffers"]
    live = live_bytes(model)
    n_steps = len(live)
    peak_step = max(range(n_steps), key=lambda s: live[s]) if n_steps else 0

    width = min(4 + 0.45 * n_steps, 30)
    fig, ax = plt.subplots(figsize=(width, 5.5), dpi=100)
    cmap = plt.get_cmap("tab20")
    bars = []
    for i, b in enumerate(buffers):
        x0, x1 = b["first_step"] - 0.4, b["last_step"] + 0.4
        rect = Rectangle((x0, b["offset"]), x1 - x0, b["size"], facecolor=cmap(i % 20), edgecolor="black",
                         linewidth=0.6, alpha=0.85, label=None)
        ax.add_patch(rect)
        bars.append(rect)
        if n_steps <= 40 and b["size"] >= 0.06 * model["arena_bytes"]:
            ax.text((x0 + x1) / 2, b["offset"] + b["size"] / 2, f"{b['tensor']}\n{b['size']} B",
                    ha="center", va="center", fontsize=7, clip_on=True)
        elif n_steps <= 40:   # thin bar: one line above it
            ax.text((x0 + x1) / 2, b["offset"] + b["size"], f"{b['tensor']} {b['size']} B",
                    ha="center", va="bottom", fontsize=6, clip_on=True)
    peak = max((r.get_y() + r.get_height() for r in bars), default=0)
    arena = model["arena_bytes"]
    ax.axhline(arena, color="red", linestyle="--", linewidth=1.2)
    ax.text(n_steps - 0.5, arena, f" arena {arena:,} B (peak)", color="red", va="bottom", ha="right", fontsize=9)
    if n_steps:
        ax.axvline(peak_step, color="gray", linestyle=":", linewidth=1)
        ax.annotate(f"most live: {live[peak_step]:,} B at step {peak_step}", xy=(peak_step, live[peak_step]),
                    xytext=(5, -12), textcoords="offset points", fontsize=8, color="dimgray")
    ax.set_xlim(-0.6, max(n_steps, 1) - 0.4)
    ax.set_ylim(0, max(arena, peak, 1) * 1.12)
    ax.set_xlabel("execution step (layer)")
    ax.set_ylabel("arena offset (bytes)")
    if n_steps <= 60:
        ax.set_xticks(range(n_steps))
        labels = [l.get("name", str(i)) for i, l in enumerate(layers)] + [str(i) for i in range(len(layers), n_steps)]
        ax.set_xticklabels([f"{i}\n{lab}" if n_steps <= 16 else lab for i, lab in enumerate(labels)],
                           rotation=0 if n_steps <= 16 else 90, fontsize=7)
    lb = model.get("arena_lower_bound")
    title = f"{name}: arena memory map, {len(buffers)} tensors, arena {arena:,} B"
    if lb is not None:
        title += f" (lower bound {lb:,} B)"
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return {"png": out_png, "peak": peak, "arena_bytes": arena, "peak_step": peak_step,
            "max_live": live[peak_step] if n_steps else 0, "bars": len(bars)}


# ---- footprint ---------------------------------------------------------------------------

def _arm_sizes(c_file: str) -> dict | None:
    """{'text', 'rodata', 'data', 'bss'} of the generated C compiled for the Cortex-M7."""
    if not (shutil.which(tc.CORTEX_M7_CC) and shutil.which(tc.CORTEX_M7_SIZE)):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        obj = os.path.join(tmp, "m.o")
        r = subprocess.run([tc.CORTEX_M7_CC, *tc.CORTEX_M7_CFLAGS, "-c", c_file, "-o", obj],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise PlotError(f"{tc.CORTEX_M7_CC} failed on {c_file}:\n{r.stderr.strip()[-2000:]}")
        secs = section_sizes(obj)
    out = {"text": 0, "rodata": 0, "data": 0, "bss": 0}
    for sec, size in secs.items():
        for key in out:
            if sec == f".{key}" or sec.startswith(f".{key}."):
                out[key] += size
    return out


def model_footprint(model: str, kernels: str = "c", cache: dict | None = None) -> dict:
    """{'weights', 'code', 'arena', 'rodata', 'code_source'} of one built model, in bytes."""
    info = load_model_json(model, kernels)
    c_file = os.path.join(gen_dir(model, kernels), f"tvmgen_{model}.c")
    res = {"model": model, "weights": info.get("weight_bytes", 0), "arena": info["arena_bytes"],
           "code": None, "rodata": None, "code_source": "not measured"}
    if os.path.isfile(c_file):
        st = os.stat(c_file)
        key = f"{c_file}:{st.st_size}:{st.st_mtime_ns}"
        sizes = cache.get(key) if cache is not None else None
        if sizes is None:
            sizes = _arm_sizes(c_file)
            if sizes is not None and cache is not None:
                cache[key] = sizes
        if sizes is not None:
            res["code"] = sizes["text"]
            res["rodata"] = sizes["rodata"]
            res["code_source"] = f"{tc.CORTEX_M7_CC}, the firmware's flags"
    return res


def _load_cache(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def footprint(models: list | None = None, out_png: str | None = None, board: str = DEFAULT_BOARD,
              kernels: str = "c") -> dict:
    """Draw the footprint chart; returns {'png', 'board': board_memory(), 'models': [model_footprint]}."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mem = board_memory(board)
    models = models or built_models(kernels)
    if not models:
        raise PlotError("no built models in build/gen/c: run ./scons host")
    out_png = out_png or os.path.join(DEFAULT_OUT, f"footprint_{board}.png")
    cache_path = os.path.join(DEFAULT_OUT, ".size-cache.json")
    cache = _load_cache(cache_path)
    rows = [model_footprint(m, kernels, cache) for m in models]
    os.makedirs(DEFAULT_OUT, exist_ok=True)
    with open(cache_path, "w") as f:
        json.dump(cache, f, indent=1)

    kib = 1024.0
    fig, (ax_f, ax_r) = plt.subplots(1, 2, figsize=(12, 1.5 + 0.55 * len(rows)), dpi=100)
    y = list(range(len(rows)))
    names = [r["model"] for r in rows]
    code = [(r["code"] or 0) / kib for r in rows]
    weights = [r["weights"] / kib for r in rows]
    arena = [r["arena"] / kib for r in rows]
    ax_f.barh(y, code, color="tab:blue", label="code (.text)")
    ax_f.barh(y, weights, left=code, color="tab:orange", label="weights")
    ax_f.axvline(mem["flash"] / kib, color="red", linestyle="--", label=f"flash {mem['flash'] / kib:g} KiB")
    ax_r.barh(y, arena, color="tab:green", label="arena")
    ax_r.axvline(mem["ram"] / kib, color="red", linestyle="--", label=f"RAM {mem['ram'] / kib:g} KiB")
    if mem["stack"]:
        ax_r.axvline((mem["ram"] - mem["stack"]) / kib, color="orange", linestyle=":",
                     label=f"RAM - {mem['stack'] / kib:g} KiB stack")
    for i, r in enumerate(rows):
        flash_used = (r["code"] or 0) + r["weights"]
        tag = "" if r["code"] is not None else " (code not measured)"
        ok = "fits" if flash_used <= mem["flash"] else "too big"
        ax_f.text(flash_used / kib, i, f" {flash_used / kib:,.1f} KiB {ok}{tag}", va="center", fontsize=8)
        ok = "fits" if r["arena"] <= mem["ram"] - mem["stack"] else "too big"
        ax_r.text(r["arena"] / kib, i, f" {r['arena'] / kib:,.1f} KiB {ok}", va="center", fontsize=8)
    for ax, title in ((ax_f, "flash: code + weights"), (ax_r, "RAM: activation arena")):
        ax.set_yticks(y)
        ax.set_yticklabels(names)
        ax.invert_yaxis()
        ax.set_xlabel("KiB")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(axis="x", alpha=0.3)
        lo, hi = ax.get_xlim()
        ax.set_xlim(0, hi * 1.25)
    fig.suptitle(f"model footprint vs {board} (sizes from {mem['source']})", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return {"png": out_png, "board": mem, "models": rows}


# ---- CLI ---------------------------------------------------------------------------------

def add_parser(subparsers, name, parents):
    from nnc.cli.main import add_subparser
    ap = add_subparser(subparsers, name, parents, __doc__)
    ap.set_defaults(run=run)
    sub = ap.add_subparsers(dest="cmd", required=True)
    mm = sub.add_parser("memory-map", help="arena offsets over execution steps of one model")
    mm.add_argument("model", help="model name (build/gen/c/<model>/model.json) or a model.json path")
    mm.add_argument("-o", "--out", help="PNG path (default build/plots/<model>_memory_map.png)")
    fp = sub.add_parser("footprint", help="code, weights and arena per model vs the board's flash and RAM")
    fp.add_argument("models", nargs="*", help="models (default: every model in build/gen/c)")
    fp.add_argument("-o", "--out", help="PNG path (default build/plots/footprint_<board>.png)")
    fp.add_argument("--board", default=DEFAULT_BOARD, help=f"board (default {DEFAULT_BOARD})")
    al = sub.add_parser("all", help="memory maps of every built model and the footprint chart")
    al.add_argument("--board", default=DEFAULT_BOARD, help=f"board (default {DEFAULT_BOARD})")
    for p in (mm, fp, al):
        p.add_argument("--kernels", default="c", choices=("c", "tvm", "m7"), help="generated code variant (default c)")


def run(args) -> int:
    if args.cmd in ("memory-map", "all"):
        for m in ([args.model] if args.cmd == "memory-map" else built_models(args.kernels)):
            r = memory_map(m, getattr(args, "out", None), args.kernels)
            print(f"{r['png']}: {r['bars']} tensors, arena {r['arena_bytes']} B, "
                  f"most live {r['max_live']} B at step {r['peak_step']}")
    if args.cmd in ("footprint", "all"):
        r = footprint(getattr(args, "models", None), getattr(args, "out", None), args.board, args.kernels)
        mem = r["board"]
        print(f"{r['png']}: {args.board} flash {mem['flash']} B, RAM {mem['ram']} B ({mem['source']})")
        for m in r["models"]:
            code = "?" if m["code"] is None else m["code"]
            print(f"  {m['model']:14} code {code} B, weights {m['weights']} B, arena {m['arena']} B")
    return 0
