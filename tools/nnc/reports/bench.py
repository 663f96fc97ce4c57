"""The bench texts: one model's instructions per inference and per layer beside its sizes, and
the summary table over several models, with the published figures they are compared with.

A bench record (what bench_record() gathers, what the tables take) is a dict:
  board, model; fit: fit.json; meta: model.json ({} if none); and when the model fits,
  bench: the serial client's bench.json, size: sizes.size_report of the image."""
from __future__ import annotations

import json
import os

from .fit import describe_no_fit

# microTVM's published LeNet-5 figures on this board (RIOT, seed 002). Other kernel providers are
# compared by running this bench with kernels=c or kernels=tvm.
MICROTVM_LENET5 = {"ms": 39.6, "ram_kb": 11.1, "flash_kb": 64.7}
# Best published MLPerf Tiny v1.0 latencies on an STM32F746 at 216 MHz, per zoo model of the same
# reference network. Goal: instructions on the emulated M7 <= 0.8 x these cycles.
F746_HZ = 216e6
MLPERF_TINY_F746 = {
    "mlperf_resnet8": {"ms": 64.8, "source": "MLPerf Tiny v1.0, image classification, Plumerai"},
    "mlperf_dscnn": {"ms": 19.1, "source": "MLPerf Tiny v1.0, keyword spotting"},
    "mlperf_mobilenet": {"ms": 57.0, "source": "MLPerf Tiny v1.0, visual wake words"},
    "mlperf_autoencoder": {"ms": 2.3, "source": "MLPerf Tiny v1.0, anomaly detection"},
}
MLPERF_GOAL = 0.8


def published_cycles(model: str):
    t = MLPERF_TINY_F746.get(model)
    return None if t is None else t["ms"] * 1e-3 * F746_HZ


def _load_json(path, default=None):
    if path is None or not os.path.exists(path):
        return default
    with open(path) as f:
        return json.load(f)


def bench_record(board: str, model: str, fit_path: str, bench_path: str, model_json: str | None,
                 size_of) -> dict:
    """The files of one model's bench as a record; `size_of()` gives the size report (only called
    when the model fits)."""
    fit = _load_json(fit_path)
    record = {"board": board, "model": model, "fit": fit, "meta": _load_json(model_json, {})}
    if fit["fits"]:
        record["bench"] = _load_json(bench_path)
        record["size"] = size_of()
    return record


def bench_figures(b: dict, size: dict, macs: int) -> dict:
    """The headline numbers of one bench (bench.json of the serial client + the size report)."""
    per = b["per_inference"]
    mean = sum(per) / len(per)
    r = size["ram"]
    return {"mean": mean, "min": min(per), "max": max(per), "per_mac": mean / macs if macs else None,
            "ram_in_use": r["total"] - r["stack_reserve"] + b["stack_used"]}


def layer_names(meta: dict) -> list:
    """[(name, kind, MACs)] per layer of a model.json."""
    return [(l["name"], l.get("kind", ""), l.get("macs", 0)) for l in meta.get("layers", [])]


def format_bench(b: dict, size: dict, names: list) -> str:
    unit = b["unit"]
    f, r = size["flash"], size["ram"]
    total_macs = sum(n[2] for n in names) if names else 0
    fig = bench_figures(b, size, total_macs)
    mean = fig["mean"]
    lines = [f"bench: {b['model']} on the emulated Cortex-M7 (QEMU mps2-an500, -icount shift="
             f"{b['icount_shift']}: exact {unit}), {b['inferences']} inferences",
             f"  {unit} per inference: {mean:,.0f} (min {fig['min']:,}, max {fig['max']:,})"
             + (f", {fig['per_mac']:.2f} per MAC ({total_macs:,} MACs)" if total_macs else ""),
             f"  flash {f['total']:,} B (weights {f['model_weights']:,}, model code {f['model_code']:,}, "
             f"runtime {f['runtime']:,})",
             f"  RAM {r['total']:,} B (arena+model data {r['model_arena_and_data']:,}, stack reserve "
             f"{r['stack_reserve']:,}, runtime {r['runtime']:,}); stack used {b['stack_used']:,} B, "
             f"so RAM in use {fig['ram_in_use']:,} B"]
    if b["per_layer"]:
        lines.append(f"  {'layer':<24}{'kind':<14}{'MACs':>10}{unit:>14}{'per MAC':>9}")
        for i, v in enumerate(b["per_layer"]):
            name, kind, macs = names[i] if i < len(names) else (f"layer {i}", "", 0)
            per_mac = f"{v / macs:.2f}" if macs else ""
            lines.append(f"  {name:<24}{kind:<14}{macs:>10,}{v:>14,}{per_mac:>9}")
        lines.append("  (per layer includes the layer hook, ~10 instructions; the rest of the total is "
                     "the call and timer reads)")
    if b["model"] == "lenet5":
        t = MICROTVM_LENET5
        lines.append(f"  microTVM on the real STM32F746G-DISCO (RIOT, published): {t['ms']} ms, "
                     f"{t['ram_kb']} KB RAM, {t['flash_kb']} KB flash")
        lines.append(f"  this firmware: {mean / 216e3:.1f} ms at 216 MHz if it ran 1 instruction per cycle "
                     f"(an estimate: QEMU has no timing model; the M7 dual-issues, flash wait states cost), "
                     f"{fig['ram_in_use'] / 1000:.1f} KB RAM in use, "
                     f"{f['total'] / 1000:.1f} KB flash")
    if b["model"] in MLPERF_TINY_F746:
        t, cycles = MLPERF_TINY_F746[b["model"]], published_cycles(b["model"])
        lines.append(f"  best published on STM32F746 @ 216 MHz ({t['source']}): {t['ms']} ms = "
                     f"{cycles:,.0f} cycles; this firmware: {mean:,.0f} instructions = "
                     f"{mean / cycles:.2f} x those cycles (goal <= {MLPERF_GOAL} x: {MLPERF_GOAL * cycles:,.0f})")
    return "\n".join(lines)


SUMMARY_COLUMNS = ["model", "MACs", "instructions / inference", "instructions / MAC", "arena B",
                   "stack used B", "flash B", "RAM in use B"]   # numbers right-aligned


def markdown_table(columns: list, rows: list, right=None) -> list:
    """A markdown table, columns padded to their widths; `right[i]`: right-align column i."""
    right = right or [False] * len(columns)
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]

    def line(cells, align):
        return "| " + " | ".join(c.rjust(w) if a else c.ljust(w) for c, w, a in zip(cells, widths, align)) + " |"
    sep = "|" + "|".join("-" * (w + 1) + (":" if a else "-") for w, a in zip(widths, right)) + "|"
    return [line(columns, [False] * len(columns)), sep] + [line(r, right) for r in rows]


def format_summary(records: list) -> str:
    """One table over the bench records of several models (a model that does not fit is a row
    'does not fit: needs N B flash of L'), then the MLPerf Tiny comparison."""
    rows, shifts, inferences, kernels = [], set(), set(), set()
    for rec in records:
        meta = rec["meta"]
        macs = meta.get("macs", 0)
        kernels.add(meta.get("kernels", "?"))
        if not rec["fit"]["fits"]:
            rows.append([rec["model"], f"{macs:,}", describe_no_fit(rec["fit"])] + [""] * (len(SUMMARY_COLUMNS) - 3))
            continue
        b, size = rec["bench"], rec["size"]
        fig = bench_figures(b, size, macs)
        shifts.add(b["icount_shift"])
        inferences.add(b["inferences"])
        rows.append([rec["model"], f"{macs:,}", f"{fig['mean']:,.0f}",
                     f"{fig['per_mac']:.2f}" if fig["per_mac"] is not None else "",
                     f"{b['workspace']:,}", f"{b['stack_used']:,}", f"{size['flash']['total']:,}",
                     f"{fig['ram_in_use']:,}"])
    board = records[0]["board"] if records else "?"
    caption = [f"Bench summary: {len(records)} zoo models on the emulated Cortex-M7 (QEMU {board}, -icount "
               f"shift={'/'.join(map(str, sorted(shifts))) or '-'}: exact instruction counts),",
               f"kernels={'/'.join(sorted(kernels))}, mean of {'/'.join(map(str, sorted(inferences))) or '-'} "
               f"inferences per model. Flash and RAM: the firmware (arm-none-eabi-size);",
               "RAM in use = static RAM - stack reserve + stack used (measured)."]
    right = [False] + [True] * (len(SUMMARY_COLUMNS) - 1)
    return "\n".join(caption + [""] + markdown_table(SUMMARY_COLUMNS, rows, right) + format_mlperf(records))


MLPERF_COLUMNS = ["model", "instructions / inference", "published F746 ms", "as cycles @ 216 MHz",
                  "instructions / published cycles", "goal (0.8 x cycles)", "source"]


def format_mlperf(records: list) -> list:
    """The MLPerf Tiny models of the bench beside the best published STM32F746 figures."""
    rows = []
    for rec in records:
        t = MLPERF_TINY_F746.get(rec["model"])
        if t is None or not rec["fit"]["fits"]:
            continue
        per = rec["bench"]["per_inference"]
        mean, cycles = sum(per) / len(per), published_cycles(rec["model"])
        rows.append([rec["model"], f"{mean:,.0f}", f"{t['ms']}", f"{cycles:,.0f}", f"{mean / cycles:.2f}",
                     f"{MLPERF_GOAL * cycles:,.0f}", t["source"]])
    if not rows:
        return []
    return ["", "MLPerf Tiny networks against the best published STM32F746 results (instructions are "
            "not cycles: the M7 dual-issues some pairs and stalls on others):", "",
            "| " + " | ".join(MLPERF_COLUMNS) + " |", "|" + "|".join("---" for _ in MLPERF_COLUMNS) + "|"] \
        + ["| " + " | ".join(r) + " |" for r in rows]
