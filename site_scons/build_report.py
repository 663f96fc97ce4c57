"""SCons wiring of `scons report`: after the benches on the emulated Cortex-M7, build/report.json
and build/report.md (nnc.reports.regression), and with baseline=FILE the gate against it."""
from __future__ import annotations

from SCons.Script import AlwaysBuild, Exit

import firmware_arm
from nnc.outdir import write_file
from nnc.reports import regression

REPORT_JSON = "build/report.json"
REPORT_MD = "build/report.md"
# option name -> the threshold it sets (percent for instructions, bytes for the others)
THRESHOLD_OPTIONS = {"max_instructions_growth": "instructions", "max_flash_growth": "flash",
                     "max_ram_growth": "ram"}


def add_options(vars):
    vars.Add("baseline", "report: compare with this report (e.g. baselines/zoo.json); fail when a figure "
             "grows past its threshold", "")
    units = {"instructions": "percent", "flash": "bytes", "ram": "bytes (also arena and stack)"}
    for option, figure in THRESHOLD_OPTIONS.items():
        vars.Add(option, f"report: allowed growth of {figure} against baseline=, in {units[figure]}",
                 str(regression.DEFAULT_THRESHOLDS[figure]))


def thresholds(env) -> dict:
    """The threshold options as numbers; exits 2 naming the option when one is not a number >= 0."""
    out = {}
    for option, figure in THRESHOLD_OPTIONS.items():
        value = env[option]
        try:
            out[figure] = float(value) if figure == "instructions" else int(value)
            if out[figure] < 0:
                raise ValueError
        except ValueError:
            kind = "a number of percent" if figure == "instructions" else "a whole number of bytes"
            print(f"error: {option}={value}: give {kind}, 0 or more")
            Exit(2)
    return out


def report(env, board, models, fw_gen, host_gen, host_kernels):
    """The `report` alias: the bench of every model on `board`, then the report and the gate."""
    baseline = None
    if env["baseline"]:
        try:   # a bad baseline stops the build before anything runs
            baseline = regression.load_report(env["baseline"])
        except regression.ReportError as e:
            print(e.format())
            Exit(2)
    limits = thresholds(env)
    fws, bench_nodes = firmware_arm.benches(board, models, fw_gen)
    root = env.Dir("#").abspath
    host_sources = {m: host_gen[m][1].abspath for m in models}
    out = [env.File("#" + REPORT_JSON), env.File("#" + REPORT_MD)]
    for node in out:
        firmware_arm.remove_stale(node)

    def act(target, source, env):
        entries = []
        for rec, fw in zip(firmware_arm.bench_records(fws), fws):
            entries.append(regression.firmware_entry(rec, rec["meta"].get("kernels", "?"),
                                                      regression.sha256_of(fw["source"]),
                                                      regression.recorded_result(root, "firmware", rec["model"])))
        for m in models:
            entries.append(regression.host_entry(m, host_kernels, regression.sha256_of(host_sources[m]),
                                                 regression.recorded_result(root, "bitexact", m)))
        rep = regression.make_report(entries)
        write_file(str(target[0]), regression.dumps(rep))
        md = regression.to_markdown(rep)
        if baseline is not None:
            rows = regression.compare(baseline, rep, limits)
            changes = regression.format_changes(rows, limits, env["baseline"])
            md += "\n" + changes + "\n"
        write_file(str(target[1]), md)
        print(md, end="")
        return 1 if baseline is not None and regression.failed(rows) else 0

    node = env.Command(out, bench_nodes + [host_gen[m][1] for m in models], env.Action(act, None))
    AlwaysBuild(node)
    env.Alias("report", node)
    return node
