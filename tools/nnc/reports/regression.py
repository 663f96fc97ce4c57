"""build/report.json: per model x board the figures a firmware team watches (flash, RAM, arena,
stack, instructions per inference on the emulated Cortex-M7, mismatches of the last bit-exact test
run, the generated C's SHA-256), its markdown form, and the gate that compares it with a
committed baseline: a figure that grows past its threshold fails (`scons report baseline=FILE`).

The report holds no time stamps or paths: the same build gives the same file."""
from __future__ import annotations

import hashlib
import json
import os

from ..errors import NncError
from .bench import markdown_table

FORMAT = "nnc-report/1"
# Figures of an entry compared with the baseline, and the threshold that limits each one's growth:
# instructions in percent of the baseline, the others in bytes.
FIGURES = ("instructions", "flash", "ram", "arena", "stack")
THRESHOLD_OF = {"instructions": "instructions", "flash": "flash", "ram": "ram", "arena": "ram", "stack": "ram"}
DEFAULT_THRESHOLDS = {"instructions": 1.0, "flash": 0, "ram": 0}
THRESHOLD_UNIT = {"instructions": "%", "flash": " B", "ram": " B"}


class ReportError(NncError):
    """A baseline or report file that cannot be read as a report."""


def sha256_of(path: str):
    """SHA-256 of a file, None if it does not exist."""
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def entry_key(model: str, board: str) -> str:
    return f"{model}@{board}"


def _with_mismatches(entry: dict, test_record) -> dict:
    if test_record is not None:
        entry["mismatches"] = test_record["mismatches"]
        entry["compared_elements"] = test_record["elements"]
    return entry


def firmware_entry(record: dict, kernels: str, c_sha256, test_record=None) -> dict:
    """One model on a Cortex-M7 board, from its bench record (nnc.reports.bench.bench_record) and
    the mismatches that the last firmware test run recorded (None when none did)."""
    entry = _with_mismatches({"model": record["model"], "board": record["board"], "kernels": kernels,
                              "c_sha256": c_sha256, "fits": record["fit"]["fits"]}, test_record)
    if not entry["fits"]:
        entry["needs"] = {region: r["needed"] for region, r in sorted(record["fit"]["regions"].items())}
        return entry
    b, size = record["bench"], record["size"]
    per = b["per_inference"]
    entry.update({"instructions": round(sum(per) / len(per)), "flash": size["flash"]["total"],
                  "ram": size["ram"]["total"], "arena": b["workspace"], "stack": b["stack_used"]})
    return entry


def host_entry(model: str, kernels: str, c_sha256, test_record) -> dict:
    """The host library of a model: the generated C it is built from and the mismatches that the
    last bit-exact test run recorded (None when no run recorded one)."""
    return _with_mismatches({"model": model, "board": "host", "kernels": kernels, "c_sha256": c_sha256},
                            test_record)


def make_report(entries: list) -> dict:
    return {"format": FORMAT, "entries": {entry_key(e["model"], e["board"]): e
                                          for e in sorted(entries, key=lambda e: (e["model"], e["board"]))}}


def dumps(report: dict) -> str:
    return json.dumps(report, indent=1, sort_keys=True) + "\n"


def load_report(path: str, option: str = "baseline") -> dict:
    """A report file, or ReportError saying what is wrong with it."""
    where = f"{option}={path}"
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ReportError(f"no such file: {path}", where,
                          "give a report written by `scons report` (build/report.json) or the committed "
                          "baselines/zoo.json") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ReportError(f"cannot read {path}: {e}", where, "give a readable report file") from None
    except json.JSONDecodeError as e:
        raise ReportError(f"{path} is not JSON: {e.msg} at line {e.lineno}, column {e.colno}", where,
                          "give a report written by `scons report`") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("entries"), dict):
        raise ReportError(f"{path} is not an nnc report (expected \"format\": \"{FORMAT}\" and \"entries\")",
                          where, "give a report written by `scons report`")
    for key, e in data["entries"].items():
        bad = [f for f in FIGURES if f in e and not isinstance(e[f], int)]
        if not isinstance(e, dict) or bad:
            raise ReportError(f"{path}: entry {key!r} has a figure that is not a whole number: "
                              f"{', '.join(bad) or 'the entry itself'}", where, "give a report written by `scons report`")
    return data


def _limit(figure: str, before: int, thresholds: dict) -> float:
    """The largest value of `figure` that passes, given the baseline value."""
    t = thresholds[THRESHOLD_OF[figure]]
    return before * (1 + t / 100.0) if figure == "instructions" else before + t


def compare(baseline: dict, current: dict, thresholds: dict | None = None) -> list:
    """Rows {entry, figure, baseline, current, change, verdict} for every figure that differs,
    every mismatch and every entry that stopped fitting; verdict 'FAIL' where the gate fails,
    'ok' (better or within the threshold) or 'note'. Entries of the baseline that this report
    did not measure are left out (a report of one model is compared on that model)."""
    thresholds = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    rows = []
    base, cur = baseline["entries"], current["entries"]
    for key in sorted(cur):
        c, b = cur[key], base.get(key)
        if c.get("mismatches"):
            rows.append({"entry": key, "figure": "mismatches", "baseline": (b or {}).get("mismatches"),
                         "current": c["mismatches"], "change": f"{c['mismatches']} of {c.get('compared_elements')}",
                         "verdict": "FAIL"})
        if b is None:
            rows.append({"entry": key, "figure": "-", "baseline": None, "current": None,
                         "change": "new: not in the baseline", "verdict": "note"})
            continue
        if b.get("fits", True) and not c.get("fits", True):
            rows.append({"entry": key, "figure": "fits", "baseline": True, "current": False,
                         "change": f"no longer fits: needs {c.get('needs')}", "verdict": "FAIL"})
            continue
        for figure in FIGURES:
            before, after = b.get(figure), c.get(figure)
            if before is None or after is None or before == after:
                continue
            change = f"{after - before:+,}" + (f" ({100.0 * (after - before) / before:+.2f}%)" if before else "")
            verdict = "FAIL" if after > _limit(figure, before, thresholds) else "ok"
            rows.append({"entry": key, "figure": figure, "baseline": before, "current": after,
                         "change": change, "verdict": verdict})
        if b.get("c_sha256") and c.get("c_sha256") and b["c_sha256"] != c["c_sha256"]:
            rows.append({"entry": key, "figure": "generated C", "baseline": b["c_sha256"][:12],
                         "current": c["c_sha256"][:12], "change": "other SHA-256", "verdict": "note"})
    return rows


def failed(rows: list) -> bool:
    return any(r["verdict"] == "FAIL" for r in rows)


def _cell(v) -> str:
    return "" if v is None else f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)


def format_changes(rows: list, thresholds: dict | None = None, baseline_name: str = "the baseline") -> str:
    """The table of changes against the baseline, with the verdict and the thresholds used."""
    t = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    limits = ", ".join(f"{k} +{v:g}{THRESHOLD_UNIT[k]}" for k, v in t.items())
    fails = sum(r["verdict"] == "FAIL" for r in rows)
    head = f"Changes against {baseline_name} (thresholds: {limits}; arena and stack use the RAM threshold):"
    if not rows:
        return head + "\n\nno changes: every figure equals the baseline.\n\ngate: pass"
    table = markdown_table(["entry", "figure", "baseline", "now", "change", "verdict"],
                           [[r["entry"], r["figure"], _cell(r["baseline"]), _cell(r["current"]), r["change"],
                             r["verdict"]] for r in rows], [False, False, True, True, True, False])
    verdict = f"gate: FAIL ({fails} figure{'s' if fails != 1 else ''} past the threshold)" if fails else "gate: pass"
    return "\n".join([head, ""] + table + ["", verdict])


REPORT_COLUMNS = ["model", "board", "kernels", "instructions", "flash B", "RAM B", "arena B", "stack B",
                  "mismatches", "generated C (SHA-256)"]


def to_markdown(report: dict) -> str:
    """The report as a markdown table (for CI logs)."""
    rows = []
    for e in report["entries"].values():
        if e.get("fits", True):
            figures = [_cell(e.get(f)) for f in FIGURES]
        else:
            figures = ["does not fit: needs " + ", ".join(f"{r} {n:,} B" for r, n in e["needs"].items() if n)]
            figures += [""] * (len(FIGURES) - 1)
        mism = "" if "mismatches" not in e else f"{e['mismatches']} of {e['compared_elements']:,}"
        rows.append([e["model"], e["board"], e.get("kernels", ""), *figures, mism, (e.get("c_sha256") or "")[:16]])
    right = [False, False, False] + [True] * len(FIGURES) + [True, False]
    return "\n".join(["Build report: instructions per inference on the emulated Cortex-M7 (QEMU mps2-an500, "
                      "exact counts), static flash and RAM of the firmware, arena and measured stack; "
                      "mismatches of the last test run (host: the library against torch; firmware: the "
                      "emulated M7 against torch and the host library).", ""]
                     + markdown_table(REPORT_COLUMNS, rows, right)) + "\n"


def load_json(path: str):
    with open(path) as f:
        return json.load(f)


# Where test runs record their mismatch counts, per kind of run and model (under the repository):
# "bitexact" (host library against torch, tests/test_zoo_bitexact.py) and "firmware" (the emulated
# Cortex-M7 against torch and the host library, tests/test_stm32.py).
RESULTS = os.path.join("build", "results")


def record_test_result(root: str, kind: str, model: str, inputs: int, elements: int, mismatches: int) -> str:
    """Writes one test run's mismatch count for the report (atomically: a reader never sees half)."""
    from ..outdir import write_file
    return write_file(os.path.join(root, RESULTS, kind, f"{model}.json"), json.dumps(
        {"model": model, "inputs": inputs, "elements": elements, "mismatches": mismatches}, indent=1) + "\n")


def recorded_result(root: str, kind: str, model: str):
    """The last recorded result of a kind of test run for a model, None if none was recorded."""
    path = os.path.join(root, RESULTS, kind, f"{model}.json")
    return load_json(path) if os.path.exists(path) else None
