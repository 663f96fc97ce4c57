"""`scons all`: the daily build matrix, every zoo model and every model of the team's list
(models=FILE, nnc.frontend.model_list) for every board it fits, in one invocation (honouring -j:
all of it is one dependency graph).

    host               every stateless model: build/host/<m>/lib<m>.so, and the inference app
    stm32f746g-disco   bare-metal firmware (fw.elf, fw.bin, fw.hex, size.json) of every stateless
    mps2-an500         model that fits the board; the emulator's image of the same firmware
    diana              seed 004's example graphs (a zoo model's float requantization has no DIANA
                       form: the zoo does not apply)
    imx681             the stateful models: the sensor packages and the host frame library

A listed model is a stateless model file: host and the Cortex-M7 boards (a model file has no DIANA
form and no state for the IMX681). A model the registry marks as not fitting the Cortex-M7 boards
is linked only for its fit check (fit.json); a listed model's fit is known from its link
(firmware_arm.image_if_fits). Either is listed with the bytes it needs, and the build goes on.
zoo=0 builds the list alone (no zoo model, no DIANA or IMX681 example). The table of the whole
matrix is printed and written to build/all/matrix.md.
"""
from __future__ import annotations

import json
import os

from SCons.Script import AlwaysBuild, Dir, SConscript

import firmware_arm
from nnc.outdir import write_file

M7_BOARDS = tuple(firmware_arm.BOARDS)
SUMMARY = "build/all/matrix.md"
COLUMNS = ("host",) + M7_BOARDS + ("imx681",)


def build_matrix(env, stateless: list, stateful: list, host_libs: dict, fw_exports: dict, fits,
                 examples: bool = True) -> list:
    """The nodes of `scons all`. host_libs: {model: host library node}; fw_exports: {model: export
    nodes with the Cortex-M7 kernels}; fits(model): whether the registry says it fits the M7 boards,
    None for a listed model (its link tells); examples: DIANA's example graphs and the IMX681
    runtime too."""
    top = Dir("#").abspath
    nodes = [lib for lib in host_libs.values()]
    cells = {}                      # (model, column) -> where the summary reads the result
    fw_dir = Dir("#firmware/riot")
    for model, lib in host_libs.items():
        cells[(model, "host")] = ("file", lib.abspath)
    for board in M7_BOARDS:
        for model in stateless:
            build_dir = f"build/{board}/{model}"
            fit = fits(model)
            if fit is None:
                nodes += firmware_arm.image_if_fits(env, board, model, fw_exports[model], build_dir, fw_dir)
            elif fit:
                nodes += SConscript("firmware/riot/SConscript",
                                    exports={"env": env, "board": board, "model": model,
                                             "gen_dir": fw_exports[model], "build_dir": build_dir}) or []
            else:
                nodes.append(firmware_arm.fit_check(env, board, model, fw_exports[model], build_dir, fw_dir))
            cells[(model, board)] = ("firmware", os.path.join(top, build_dir))
    diana = (SConscript("firmware/diana/SConscript", exports={"env": env, "board": "diana", "models": []})
             or []) if examples else []
    imx681 = (SConscript("firmware/imx681/SConscript", exports={"env": env, "board": "imx681",
                                                                "models": stateful}) or []) if examples else []
    for model in stateful:
        cells[(model, "imx681")] = ("file", os.path.join(top, "build", "imx681", model, "host",
                                                         f"lib{model}_frames.so"))
    nodes += diana + imx681
    graphs = sorted(os.path.basename(str(n))[:-len(".elf")] for n in diana if str(n).endswith(".elf"))
    listed = [m for m in stateless if fits(m) is None]
    summary = env.Command("#" + SUMMARY, nodes,
                          env.Action(_summary_action(stateless + stateful, cells, graphs, listed), None))
    AlwaysBuild(summary)
    return nodes + summary


def _cell(kind: str, path: str) -> tuple[str, bool]:
    """(table cell, whether it is a build) of one model on one board."""
    if kind == "file":
        return (f"{os.path.getsize(path):,} B", True) if os.path.exists(path) else ("missing", False)
    fit = json.load(open(os.path.join(path, "fit.json")))
    if not fit["fits"]:
        return (firmware_arm.describe_no_fit(fit), False)
    size = json.load(open(os.path.join(path, "size.json")))
    return (f"flash {size['flash']['total']:,} B, RAM {size['ram']['total']:,} B", True)


def format_matrix(models: list, cells: dict, graphs: list, listed=()) -> str:
    """The table; listed: the models of the team's list (the others are the zoo's)."""
    rows, built, not_fitting = [], 0, []
    for model in models:
        row = [model]
        for column in COLUMNS:
            if (model, column) not in cells:
                row.append("-")
                continue
            text, ok = _cell(*cells[(model, column)])
            built += ok
            if not ok:
                not_fitting.append(f"{model} on {column}: {text}")
            row.append(text)
        rows.append(row)
    head = ("model",) + COLUMNS
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    zoo = len(models) - len(listed)
    counts = " and ".join(([f"{zoo} zoo models"] if zoo else []) + ([f"{len(listed)} listed models"] if listed else []))
    diana = f"diana: {len(graphs)} example graphs ({', '.join(graphs)})" if graphs else "diana: not built (zoo=0)"
    lines = [f"Build matrix: {counts} x {len(COLUMNS)} targets, {built} builds, "
             f"{len(not_fitting)} that do not fit; {diana}.",
             "host: the shared library's size; boards: the firmware's flash and static RAM "
             "(arm-none-eabi-size); imx681: the host frame library's size; '-': not a target of "
             "the model (stateful models run on the imx681 only, listed model files on the host "
             "and the Cortex-M7 boards).", "",
             line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows]
    if not_fitting:
        lines += ["", "Do not fit (not an error; the table above has the numbers):"] + \
                 [f"  {n}" for n in not_fitting]
    return "\n".join(lines)


def _summary_action(models, cells, graphs, listed):
    def act(target, source, env):
        text = format_matrix(models, cells, graphs, listed)
        print(text)
        write_file(str(target[0]), text + "\n")
        return 0
    return act
