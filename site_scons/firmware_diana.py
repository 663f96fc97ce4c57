"""SCons wiring of board=diana: seed 004's example graphs compiled for "soma_dory, c", linked with
the HAL (bit-exact accelerator model) and the RV32IMC board layer; `run` / `bench` run them on
qemu-system-riscv32 (firmware/diana/run_qemu.py). Flags: nnc.toolchains; sources and QEMU
command: nnc.targets.diana.firmware; the summary table: nnc.reports.diana.

The DIANA board builds the seed's hand-made integer graphs (nnc.targets.diana.examples), not
the torch zoo: the zoo's layers use float requantization, which the accelerator does not have.
An explicit model= is refused rather than ignored: the user would otherwise believe their
model ran on DIANA."""
from __future__ import annotations

import os

from SCons.Script import AlwaysBuild, Exit

from argv_action import argv_action
from nnc import toolchains as tc
from nnc.targets.diana import firmware as fw
from nnc.targets.diana.examples import EXAMPLES

SAMPLES = 8


def _compiler_deps(root):
    deps = [os.path.join(root, "tools", "diana_compile.py")]
    for dirpath, _, names in os.walk(os.path.join(root, "tools", "nnc")):
        deps += [os.path.join(dirpath, n) for n in sorted(names) if n.endswith(".py")]
    return deps


def firmware(env, board, models):
    """The firmware of every example graph and the run/bench/diana aliases; returns the images."""
    if env["model"] not in ("", "all"):
        print(f"error: board=diana builds seed 004's example graphs, not the zoo model "
              f"{env['model']!r} (its layers use float requantization, which the accelerator lacks)\n"
              f"  where: model={env['model']}\n"
              f"  fix:   drop model= to build the example graphs, or compile your own integer graph: "
              f"nnc diana --script my_graph.py")
        Exit(2)
    root = env.Dir("#").abspath
    cross = env.Clone(CC=tc.RV32_CC, AS=tc.RV32_CC, ASPP=tc.RV32_CC, LINK=tc.RV32_CC,
                      CCFLAGS=tc.DIANA_CFLAGS, ASPPFLAGS=tc.DIANA_ARCH_FLAGS, LINKFLAGS=tc.DIANA_LINKFLAGS,
                      CPPPATH=fw.INCLUDES, LIBS=[], OBJSUFFIX=".o", PROGSUFFIX=".elf")
    runtime = [cross.Object(f"#build/diana/runtime/{os.path.basename(s).rsplit('.', 1)[0]}.o", s)
               for s in fw.RUNTIME_SOURCES]
    for node in runtime:
        cross.Depends(node, [os.path.join(fw.FW, "hal", "diana_hal.h"), os.path.join(fw.FW, "board", "board.h")])

    images, specs = [], []
    for name in EXAMPLES:
        out = f"build/diana/{name}"
        model_dir = f"{out}/model"
        gen = cross.Command(
            [f"#{model_dir}/gen/tvmgen_{name}.c", f"#{model_dir}/gen/tvmgen_{name}.h",
             f"#{model_dir}/app/demo.c", f"#{model_dir}/placement_report.txt", f"#{model_dir}/placement.json"],
            _compiler_deps(root),
            argv_action([env["PYTHON"], "tools/diana_compile.py", "--graph", name, f"--out={model_dir}",
                         "--samples", str(SAMPLES)], cwd=root))
        model_env = cross.Clone()
        model_env.Append(CPPPATH=[f"#{model_dir}/gen"])
        model_obj = model_env.Object(f"#{out}/obj/tvmgen_{name}.o", gen[0],
                                     CCFLAGS=tc.DIANA_CFLAGS + ["-include", fw.HOOK])
        demo_obj = model_env.Object(f"#{out}/obj/demo.o", gen[2])
        model_env.Depends(model_obj + demo_obj, [gen[1], fw.HOOK])
        elf = model_env.Program(f"#{out}/{name}.elf", model_obj + demo_obj + runtime)
        model_env.Depends(elf, tc.DIANA_LINKER_SCRIPT)
        images += elf
        specs.append(f"{name}={elf[0].path}:{gen[4].path}")

    runner = [env["PYTHON"], os.path.join("firmware", "diana", "run_qemu.py"), "--log-dir", "build/diana/logs"]
    run = env.Alias("run", images, argv_action(runner + specs, cwd=root))
    bench = env.Alias("bench", images, argv_action(runner + ["--bench"] + specs, cwd=root))
    AlwaysBuild(run)
    AlwaysBuild(bench)
    env.Alias("diana", images)
    return images
