#!/usr/bin/env python3
"""Run DIANA firmware images on qemu-system-riscv32 (-M virt, -icount shift=0) and report.

    python firmware/diana/run_qemu.py [--bench] [--log-dir DIR] NAME=ELF[:PLACEMENT_JSON] ...

Prints each firmware's console (per-layer instruction counts and accelerator cycles) unless
--bench, then a summary per graph: share of MACs on the accelerator, RISC-V instructions in CPU
fallback layers and in word reversals, and the accelerator cycle estimate. Exits non-zero if
any firmware fails (QEMU's exit status is the firmware's).
"""
import argparse
import json
import os
import sys

from nnc.reports.diana import parse_results, summary_table
from nnc.targets.diana.firmware import run_qemu


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("images", nargs="+", help="NAME=ELF[:PLACEMENT_JSON]")
    ap.add_argument("--bench", action="store_true", help="print only the summary table")
    ap.add_argument("--log-dir", help="write <NAME>.log with each console output")
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args(argv)
    results, placements, failed = [], {}, []
    for spec in args.images:
        name, _, rest = spec.partition("=")
        elf, _, pjson = rest.partition(":")
        rc, out = run_qemu(elf, args.timeout)
        if args.log_dir:
            os.makedirs(args.log_dir, exist_ok=True)
            with open(os.path.join(args.log_dir, f"{name}.log"), "w") as f:
                f.write(out)
        if not args.bench or rc != 0:
            print(f"== {name}: qemu-system-riscv32 -M virt -icount shift=0 -kernel {elf}")
            print(out.rstrip())
            print(f"== {name}: exit status {rc}")
        if rc != 0:
            failed.append(f"{name} (exit status {rc})")
        rs = parse_results(out)
        results += rs
        if pjson and os.path.exists(pjson):
            with open(pjson) as f:
                p = json.load(f)
            for r in rs:
                placements[r["model"]] = p
    print("\nDIANA summary (RISC-V instructions measured with minstret under QEMU -icount shift=0; "
          "accelerator cycles from the cost model, 256 MAC/cycle peak at 100 MHz)")
    print(summary_table(results, placements), end="")
    if failed:
        print("FAILED: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
