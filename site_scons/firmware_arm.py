"""SCons wiring of the Cortex-M7 boards (stm32f746g-disco, mps2-an500: firmware/riot, bare metal):
the build, and the run / flash / size / bench aliases, plus the bench summary over several
models. Called from firmware/riot/SConscript (one model) and from the SConstruct (bench_summary).
Compilers and flags: nnc.toolchains; sizes, fit checks and bench tables: nnc.reports.

Two ways to build the same application sources:
  - bare metal (default): startup, vector table, linker script and UART of firmware/riot/board/<board>
  - RIOT (RIOTBASE=... given, board=stm32f746g-disco; always for board=native64): RIOT's make with
    firmware/riot/Makefile, see firmware_riot.py
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

from SCons.Script import AlwaysBuild, Dir, GetOption

from argv_action import argv_action
import firmware_riot
from nnc import toolchains as tc
from nnc.outdir import write_file
from nnc.reports import bench as bench_report
from nnc.reports.fit import describe_no_fit, fit_error, fit_record, link_overflow
from nnc.reports.header import samples_args
from nnc.reports.linker import board_memory
from nnc.reports.sizes import firmware_size, format_size_report, object_breakdown, section_sizes

BOARDS = tc.CORTEX_M7_BOARDS


def _write_fit(path: str, board: str, model: str, regions: dict):
    """fit.json, the result of the link's fit check: fits, or the regions that overflow."""
    write_file(path, json.dumps(fit_record(board, model, regions), indent=1) + "\n")


def _fit_message(regions, board, model, objs, elf, severity="error"):
    sizes = {o: section_sizes(o) for o in objs if os.path.exists(o)}
    return fit_error(regions, board, BOARDS[board]["what"], model, object_breakdown(sizes, model), elf, severity)


def _link_failed(stderr: str, board: str, model: str, objs: list, elf: str, fit_path: str,
                 nofit_ok: bool) -> int:
    """After a failed link: no outputs left; a region overflow is recorded in fit.json and, with
    nofit_ok (a bench over several models), reported as a note instead of failing the build."""
    _remove_outputs(elf)
    regions = link_overflow(stderr, board_memory(board))
    if not regions:
        sys.stderr.write((stderr.rstrip() or "link failed") + "\n")
        return 1
    _write_fit(fit_path, board, model, regions)
    if nofit_ok:
        print(_fit_message(regions, board, model, objs, elf, severity="note")
              + "\n  listed as 'does not fit' (bench summary, scons all)")
        return 0
    sys.stderr.write(_fit_message(regions, board, model, objs, elf) + "\n")
    return 1


# ---------------------------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------------------------

def _model_files(gen_dir, model):
    """gen_dir: a Dir, a path, or the node list of the export (header, source, ...)."""
    if isinstance(gen_dir, (list, tuple)) or hasattr(gen_dir, "__iter__") and not isinstance(gen_dir, str):
        nodes = list(gen_dir)
        src = [n for n in nodes if str(n).endswith(f"tvmgen_{model}.c")]
        hdr = [n for n in nodes if str(n).endswith(f"tvmgen_{model}.h")]
        js = [n for n in nodes if str(n).endswith("model.json")]
        if not src or not hdr:
            raise ValueError(f"gen_dir nodes hold no tvmgen_{model}.c/.h")
        return src[0], hdr[0], (js[0] if js else None)
    d = Dir(gen_dir) if isinstance(gen_dir, str) else gen_dir
    js = d.File("model.json")
    return d.File(f"tvmgen_{model}.c"), d.File(f"tvmgen_{model}.h"), js


def _remove_outputs(elf: str):
    """After a failed link: no fw.elf, and no older fw.bin/.hex/size.json that could pass for it."""
    d = os.path.dirname(elf)
    for name in ("fw.elf", "fw.map", "fw.bin", "fw.hex", "size.json", "fit.json", "bench.json",
                 "bench.txt") + FIT_CHECK_FILES:
        p = os.path.join(d, name)
        if os.path.exists(p):
            os.remove(p)


def _link_action(board, model, nofit_ok, fit_only=False):
    """Links fw.elf and fw.map and writes fit.json. fit_only (targets: fit.json alone): the image is
    linked beside it only to learn whether it fits, and removed."""
    def link(target, source, env):
        if fit_only:
            fit_path = str(target[0])
            elf, map_file = (os.path.join(os.path.dirname(fit_path), n) for n in FIT_CHECK_FILES)
        else:
            elf, map_file, fit_path = (str(t) for t in target[:3])
        cmd = [tc.CORTEX_M7_CC, *tc.CORTEX_M7_LINKFLAGS, "-L", env["FW_COMMON_DIR"], "-T", env["FW_LDSCRIPT"],
               f"-Wl,-Map={map_file}", "-o", elf, *[str(s) for s in source if str(s).endswith(".o")], "-lm"]
        print(" ".join(cmd))
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            return _link_failed(r.stderr, board, model, [str(s) for s in source], elf, fit_path, nofit_ok)
        _write_fit(fit_path, board, model, {})
        if fit_only:
            for p in (elf, map_file):
                os.remove(p)
        if r.stderr.strip():
            sys.stderr.write(r.stderr)
        return 0
    return link


FIT_CHECK_FILES = ("fit-check.elf", "fit-check.map")


def _size_action(board, model):
    def act(target, source, env):
        rep = firmware_size(str(source[0]), str(source[1]), model, board, board_memory(board))
        write_file(str(target[0]), json.dumps(rep, indent=1))
        print(format_size_report(rep))
        return 0
    return act


def _print_size(target, source, env):
    print(format_size_report(json.load(open(str(source[0])))))
    return 0


def reproducible_paths() -> list:
    """Compiler flags that keep the checkout's location out of the objects: the debug information
    (-g) names the compiler's working folder and the sources by path, which would make the image
    of a checkout in another folder differ (and a shared cache useless). The folder is written as
    '.'. Between $( $): left out of the build signature, so two checkouts share cache entries."""
    return ["$(", f"-ffile-prefix-map={Dir('#').abspath}=.", "$)"]


def bare_metal(env, board, model, src_c, hdr, bdir, fw_dir, nofit_ok=False, fit_only=False):
    """The bare-metal image's objects and link: (env, elf, map, fit.json); fit_only: (env, None,
    None, fit.json), the link run only for its fit check (a model known not to fit)."""
    e = env.Clone()
    e.Replace(CC=tc.CORTEX_M7_CC, AS=tc.CORTEX_M7_CC, OBJSUFFIX=".o", CCFLAGS=tc.CORTEX_M7_CFLAGS, CFLAGS=[],
              CPPFLAGS=reproducible_paths(),
              CPPPATH=[fw_dir.abspath, fw_dir.Dir("board/common").abspath, hdr.dir.abspath],
              CPPDEFINES=[("BOARD_NUM_IRQS", BOARDS[board]["irqs"]), ("NNC_MODEL", model),
                          ("NNC_MODEL_UC", model.upper())])
    obj = bdir.Dir("obj")
    app_flags = tc.CORTEX_M7_CFLAGS + tc.CORTEX_M7_APP_FLAGS
    objs = [
        e.Object(obj.File("main.o"), fw_dir.File("main.c"), CCFLAGS=app_flags),
        e.Object(obj.File("startup.o"), fw_dir.File("board/common/startup.c"),
                 CCFLAGS=app_flags + ["-std=gnu99"]),
        e.Object(obj.File("board.o"), fw_dir.File(f"board/{board}/board.c"), CCFLAGS=app_flags),
        e.Object(obj.File(f"tvmgen_{model}.o"), src_c,
                 CCFLAGS=tc.CORTEX_M7_CFLAGS + ["-include", fw_dir.File("layer_hook.h").path]),
    ]
    objs = [o[0] for o in objs]
    e.Depends(objs[0], hdr)   # included through a macro: the scanner cannot see it
    ld = fw_dir.File(f"board/{board}/linker.ld")
    e["FW_LDSCRIPT"] = ld.abspath
    e["FW_COMMON_DIR"] = fw_dir.Dir("board/common").abspath
    if fit_only:
        fit = e.Command(bdir.File("fit.json"), objs, e.Action(_link_action(board, model, True, True), None))[0]
        e.Depends(fit, [ld, fw_dir.File("board/common/sections.ld")])
        return e, None, None, fit
    elf, map_file, fit = e.Command([bdir.File("fw.elf"), bdir.File("fw.map"), bdir.File("fit.json")], objs,
                                   e.Action(_link_action(board, model, nofit_ok), None))
    e.Depends(elf, [ld, fw_dir.File("board/common/sections.ld")])
    return e, elf, map_file, fit


def fit_check(env, board, model, gen_dir, build_dir, fw_dir):
    """The link of a model that is not expected to fit the board, only for its fit check: returns
    fit.json (`scons all` lists the model with the numbers; no image, no failure)."""
    src_c, hdr, _ = _model_files(gen_dir, model)
    bdir = Dir(build_dir if os.path.isabs(str(build_dir)) else "#" + str(build_dir))
    return bare_metal(env, board, model, src_c, hdr, bdir, fw_dir, fit_only=True)[3]


def image_if_fits(env, board, model, gen_dir, build_dir, fw_dir):
    """The image of a model whose fit is known only from its link (a listed model file of `scons
    all`; the zoo's registry says which zoo models fit): fw.elf, fw.map and fit.json, then fw.bin,
    fw.hex and size.json when it fits. When it does not, the link leaves fit.json alone (listed
    with the bytes it needs, not an error), and as fw.elf is missing the next build links again."""
    src_c, hdr, _ = _model_files(gen_dir, model)
    bdir = Dir(build_dir if os.path.isabs(str(build_dir)) else "#" + str(build_dir))
    e, elf, map_file, fit = bare_metal(env, board, model, src_c, hdr, bdir, fw_dir, nofit_ok=True)
    images = e.Command([bdir.File("fw.bin"), bdir.File("fw.hex"), bdir.File("size.json")], [elf, map_file, fit],
                       e.Action(_images_if_fit(board, model), None))
    return [elf, fit] + images


def _images_if_fit(board, model):
    def act(target, source, env):
        elf, map_file, fit = (str(s) for s in source)
        if not json.load(open(fit))["fits"]:
            return 0
        for fmt, out in (("binary", target[0]), ("ihex", target[1])):
            cmd = [tc.CORTEX_M7_OBJCOPY, "-O", fmt, elf, str(out)]
            print(shlex.join(cmd), flush=True)
            if subprocess.run(cmd).returncode != 0:
                return 1
        return _size_action(board, model)([target[2]], [elf, map_file], env)
    return act


def firmware(env, board, model, gen_dir, build_dir, fw_dir):
    """Defines the firmware of one board/model and its aliases; returns the default targets.

    env["NOFIT_OK"] true (a bench over several models): a model that does not fit is recorded in
    fit.json and benched as 'does not fit' instead of failing the build."""
    if board not in BOARDS and board not in firmware_riot.NATIVE_BOARDS:
        raise ValueError(f"firmware/riot builds for {', '.join(BOARDS + firmware_riot.NATIVE_BOARDS)}, "
                         f"not {board!r}")
    opts = env.get("OPTS", {}) or {}
    nofit_ok = bool(env.get("NOFIT_OK"))
    python = env.get("PYTHON", sys.executable)
    root = fw_dir.Dir("../..")   # the repository, also when called from a SConstruct elsewhere
    bdir = Dir(build_dir if os.path.isabs(str(build_dir)) else "#" + str(build_dir))
    src_c, hdr, model_json = _model_files(gen_dir, model)
    riotbase = opts.get("RIOTBASE") or ""

    if board in firmware_riot.NATIVE_BOARDS:
        return firmware_riot.native_firmware(env, board, model, src_c, hdr, bdir, fw_dir, opts, python, root)
    if riotbase and board in firmware_riot.RIOT_BOARDS:
        bdir = bdir.Dir("riot")   # next to the bare-metal image, so both can be compared
        e, elf, map_file, fit = firmware_riot.build(env, board, model, src_c, hdr, bdir, fw_dir, riotbase,
                                                    nofit_ok)
    else:
        if riotbase:
            print(f"note: RIOT has no {board} board; building the bare-metal firmware for it")
        e, elf, map_file, fit = bare_metal(env, board, model, src_c, hdr, bdir, fw_dir, nofit_ok)

    binf = e.Command(bdir.File("fw.bin"), elf, argv_action([tc.CORTEX_M7_OBJCOPY, "-O", "binary", elf, bdir.File("fw.bin")]))
    hexf = e.Command(bdir.File("fw.hex"), elf, argv_action([tc.CORTEX_M7_OBJCOPY, "-O", "ihex", elf, bdir.File("fw.hex")]))
    size_json = e.Command(bdir.File("size.json"), [elf, map_file],
                          e.Action(_size_action(board, model), None))
    targets = [elf, binf[0], hexf[0], size_json[0]]

    size_alias = e.Command(bdir.File(".size-print"), size_json, e.Action(_print_size, None))
    AlwaysBuild(size_alias)
    e.Alias("size", size_alias)

    client = root.File("tools/serial_client.py").abspath
    # The firmware's outputs are compared with the host library of the portable reference
    # (env["REFERENCE_LIBS"]: model -> (library, its header), from the SConstruct), not with a
    # host build of the firmware's own kernels.
    so, so_hdr = (env.get("REFERENCE_LIBS") or {}).get(
        model, (Dir("#").File(f"build/host/{model}/lib{model}.so"), hdr))
    compare = []
    run_deps = [elf]
    if so.has_builder() or os.path.exists(so.abspath):
        compare = ["--so", so.abspath, "--header", so_hdr.abspath]
        run_deps += [so, so_hdr]
    fw = _bench_paths(board, model, bdir, hdr, model_json)

    if board == "mps2-an500":
        run = e.Command(bdir.File(".run"), run_deps,
                        argv_action([python, client, f"--qemu={elf.abspath}", *samples_args(hdr.abspath),
                                     "--count", "20", *compare]))
        bench_deps = run_deps + [map_file, fit, hdr] + ([model_json] if model_json else [])
        bench = e.Command(bdir.File("bench.txt"), bench_deps,
                          e.Action(_bench_action(fw, [python, client], compare), None))
    else:
        port = opts.get("port") or "/dev/ttyACM0"
        run = e.Command(bdir.File(".run"), run_deps,
                        argv_action([python, client, f"--port={port}", *samples_args(hdr.abspath),
                                     "--count", "20", *compare]))
        programmer = opts.get("programmer") or "openocd"
        flash = e.Command(bdir.File(".flash"), [elf, binf[0]],
                          argv_action([python, root.File("tools/flash.py"), "--programmer", programmer,
                                       f"--elf={elf.abspath}", f"--bin={binf[0].abspath}"]))
        AlwaysBuild(flash)
        e.Alias("flash", flash)
        bench = e.Command(bdir.File(".bench-note"), [elf, map_file, fit],
                          e.Action(_bench_board_note(fw), None))
    AlwaysBuild(run)
    AlwaysBuild(bench)
    e.Alias("run", run)
    e.Alias("bench", bench)
    firmware_riot.check_alias(e, board, model, elf, binf[0], bdir, so_hdr, so, opts, python, root)
    if board == "mps2-an500":
        e.Alias("flash", e.Command(bdir.File(".flash"), [], e.Action(_no_flash_emulator, None)))
    return targets


def _no_flash_emulator(target, source, env):
    sys.stderr.write("error: board=mps2-an500 is the emulator: there is nothing to flash. "
                     "Use `scons board=mps2-an500 run`, or board=stm32f746g-disco flash for the real board.\n")
    return 2


def _bench_paths(board, model, bdir, hdr, model_json) -> dict:
    """Where the bench of one board/model finds its inputs (paths: they end up in action closures)."""
    return {"board": board, "model": model, "elf": bdir.File("fw.elf").abspath,
            "map": bdir.File("fw.map").abspath, "fit": bdir.File("fit.json").abspath,
            "bench_json": bdir.File("bench.json").abspath, "header": hdr.abspath,
            "model_json": model_json.abspath if model_json is not None else None}


def _fit_record(fw: dict) -> dict:
    return json.load(open(fw["fit"]))


def _size(fw: dict) -> dict:
    return firmware_size(fw["elf"], fw["map"], fw["model"], fw["board"], board_memory(fw["board"]))


def _record(fw: dict) -> dict:
    """The bench record of one board/model (nnc.reports.bench)."""
    return bench_report.bench_record(fw["board"], fw["model"], fw["fit"], fw["bench_json"], fw["model_json"],
                                     lambda: _size(fw))


def _bench_board_note(fw):
    def act(target, source, env):
        fit = _fit_record(fw)
        if not fit["fits"]:
            print(f"bench: {fw['model']} on {fw['board']}: {describe_no_fit(fit)}")
            return 0
        print(format_size_report(_size(fw)))
        print(f"bench: instruction counts come from the emulated Cortex-M7: "
              f"scons board=mps2-an500 model={fw['model']} bench")
        return 0
    return act


BENCH_INFERENCES = 5


def _bench_action(fw, client, compare):
    """Runs the firmware under QEMU (serial client, BENCH_INFERENCES inputs, outputs compared with
    the host library) and prints/writes the report; a model that does not fit gets a one-line
    report. Any failure of the client (QEMU, mismatch) fails the bench and leaves no bench.json."""
    def act(target, source, env):
        fit = _fit_record(fw)
        if not fit["fits"]:
            text = f"bench: {fw['model']} on {fw['board']}: {describe_no_fit(fit)} (not run)"
            print(text)
            write_file(str(target[0]), text + "\n")
            return 0
        bench_json = fw["bench_json"]
        cmd = [*client, "--qemu", fw["elf"], *samples_args(fw["header"]),
               "--count", str(BENCH_INFERENCES), "--quiet", "--bench", bench_json, *compare]
        print(" ".join(shlex.quote(c) for c in cmd))
        sys.stdout.flush()
        if subprocess.run(cmd).returncode != 0:
            if os.path.exists(bench_json):
                os.remove(bench_json)
            sys.stderr.write(f"error: bench of {fw['model']} failed (see above)\n")
            return 1
        rec = _record(fw)
        text = bench_report.format_bench(rec["bench"], rec["size"], bench_report.layer_names(rec["meta"]))
        print(text)
        write_file(str(target[0]), text + "\n")
        return 0
    return act


# ---------------------------------------------------------------------------------------------
# bench summary over several models
# ---------------------------------------------------------------------------------------------

def bench_summary(env, board, models, gen_dirs, summary):
    """After the per-model benches of `models` (firmware() of each, build/<board>/<model>), one
    table over all of them, printed and written to `summary` (markdown). A model that does not
    fit is a row 'does not fit: needs N B flash of L'. Returns the summary node."""
    fws, bench_nodes = benches(board, models, gen_dirs)
    remove_stale(env.File(summary))
    node = env.Command(env.File(summary), bench_nodes, env.Action(_summary_action(fws), None))
    AlwaysBuild(node)
    env.Alias("bench", node)
    return node


def benches(board, models, gen_dirs):
    """(where each model's bench finds its files, the bench.txt nodes) of firmware() benches."""
    fws, bench_nodes = [], []
    for model in models:
        bdir = Dir(f"#build/{board}/{model}")
        src, hdr, model_json = _model_files(gen_dirs[model], model)
        fws.append({**_bench_paths(board, model, bdir, hdr, model_json), "source": src.abspath})
        bench_nodes.append(bdir.File("bench.txt"))
    return fws, bench_nodes


def bench_records(fws) -> list:
    """The bench record of each model (nnc.reports.bench), after its bench ran."""
    return [_record(fw) for fw in fws]


def remove_stale(node):
    """Removes a result file now, before anything is built (not for -n, -q, -h): a run that fails
    leaves no older file that could pass for its result."""
    if os.path.exists(node.abspath) and not any(GetOption(o) for o in ("no_exec", "question", "help")):
        os.remove(node.abspath)


def _summary_action(fws):
    def act(target, source, env):
        text = bench_report.format_summary(bench_records(fws))
        print(text)
        write_file(str(target[0]), text + "\n")
        return 0
    return act
