"""`scons all`: the daily build matrix, every zoo model for every board it fits, in one invocation
(honouring -j: all of it is one dependency graph).

    host               every stateless model: build/host/<m>/lib<m>.so, and the inference app
    stm32f746g-disco   bare-metal firmware (fw.elf, fw.bin, fw.hex, size.json) of every stateless
    mps2-an500         model that fits the board; the emulator's image of the same firmware
    diana              seed 004's example graphs (a zoo model's float requantization has no DIANA
                       form: the zoo does not apply)
    imx681             the stateful models: the sensor packages and the host frame library

A model the registry marks as not fitting the Cortex-M7 boards is linked only for its fit check
(fit.json): it is listed with the bytes it needs, and the build goes on. The table of the whole
matrix is printed and written to build/all/matrix.md.
"""
from __future__ import annotations

import json
import os

from SCons.Script import AlwaysBuild, Dir, SConscript

import firmware_arm

M7_BOARDS = tuple(firmware_arm.BOARDS)
SUMMARY = "build/all/matrix.md"
COLUMNS = ("host",) + M7_BOARDS + ("imx681",)


def build_matrix(env, stateless: list, stateful: list, host_libs: dict, fw_exports: dict, fits) -> list:
    """The nodes of `scons all`. host_libs: {model: host library node}; fw_exports: {model: export
    nodes with the Cortex-M7 kernels}; fits(model): whether the registry says it fits the M7 boards."""
    top = Dir("#").abspath
    nodes = [lib for lib in host_libs.values()]
    cells = {}                      # (model, column) -> where the summary reads the result
    fw_dir = Dir("#firmware/riot")
    for model, lib in host_libs.items():
        cells[(model, "host")] = ("file", lib.abspath)
    for board in M7_BOARDS:
        for model in stateless:
            build_dir = f"build/{board}/{model}"
            if fits(model):
                nodes += SConscript("firmware/riot/SConscript",
                                    exports={"env": env, "board": board, "model": model,
                                             "gen_dir": fw_exports[model], "build_dir": build_dir}) or []
            else:
                nodes.append(firmware_arm.fit_check(env, board, model, fw_exports[model], build_dir, fw_dir))
            cells[(model, board)] = ("firmware", os.path.join(top, build_dir))
    diana = SConscript("firmware/diana/SConscript", exports={"env": env, "board": "diana", "models": []}) or []
    imx681 = SConscript("firmware/imx681/SConscript", exports={"env": env, "board": "imx681",
                                                               "models": stateful}) or []
    for model in stateful:
        cells[(model, "imx681")] = ("file", os.path.join(top, "build", "imx681", model, "host",
                                                         f"lib{model}_frames.so"))
    nodes += diana + imx681
    graphs = sorted(os.path.basename(str(n))[:-len(".elf")] for n in diana if str(n).endswith(".elf"))
    summary = env.Command("#" + SUMMARY, nodes,
                          env.Action(_summary_action(stateless + stateful, cells, graphs), None))
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


def format_matrix(models: list, cells: dict, graphs: list) -> str:
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
    lines = [f"Build matrix: {len(models)} zoo models x {len(COLUMNS)} targets, {built} builds, "
             f"{len(not_fitting)} that do not fit; diana: {len(graphs)} example graphs "
             f"({', '.join(graphs)}).",
             "host: the shared library's size; boards: the firmware's flash and static RAM "
             "(arm-none-eabi-size); imx681: the host frame library's size; '-': not a target of "
             "the model (stateful models run on the imx681 only).", "",
             line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows]
    if not_fitting:
        lines += ["", "Do not fit (not an error; the table above has the numbers):"] + \
                 [f"  {n}" for n in not_fitting]
    return "\n".join(lines)


def _summary_action(models, cells, graphs):
    def act(target, source, env):
        text = format_matrix(models, cells, graphs)
        print(text)
        firmware_arm._write_atomic(str(target[0]), text + "\n")
        return 0
    return act
