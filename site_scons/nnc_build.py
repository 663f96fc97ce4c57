"""SCons glue: where things go and how a model becomes C and a host library.

Only build wiring lives here; the compiler is tools/nnc and the tools are tools/*.py.
"""
import os
import sys

from SCons.Script import Dir

ROOT = Dir("#").abspath
sys.path[:0] = [ROOT, os.path.join(ROOT, "tools")]

from nnc.toolchains import HOST_CC, HOST_CFLAGS  # noqa: E402

BOARDS = {
    "host": "x86-64 shared libraries, tested through cffi",
    "stm32f746g-disco": "STM32F746G-DISCO (Cortex-M7): RIOT app or bare-metal firmware, flash",
    "mps2-an500": "the same firmware on QEMU's emulated Cortex-M7 (MPS2 AN500)",
    "native64": "the same firmware through RIOT for RIOT's native64 board (a Linux process; RIOTBASE=)",
    "diana": "DIANA SoC: RV32IMC host + digital accelerator model, on QEMU",
    "imx681": "Sony IMX681 vision sensor: C sources or memory images, host frame library",
}


def compiler_sources():
    """Every Python file an export depends on, so that a compiler change rebuilds the C."""
    files = []
    for sub in ("tools/nnc", "models"):
        for dirpath, _, names in os.walk(os.path.join(ROOT, sub)):
            files += [os.path.join(dirpath, n) for n in sorted(names) if n.endswith(".py")]
    return sorted(files) + [os.path.join(ROOT, "tools", "export.py")]


def model_names(stateful=False):
    """Zoo models; stateful ones (a state tensor kept between frames) build with board=imx681."""
    from models.registry import MODELS
    return [name for name, spec in MODELS.items() if bool(spec.stateful) == stateful]


def model_checkpoint(name):
    from models.registry import get
    path = get(name).checkpoint
    return os.path.join(ROOT, path) if path else None


def model_file(value):
    """model= naming a model file or a PT2E zoo variant -> (build name, source), else None.

    The build name is what tools/export.py names the C (the file's base name); export.py
    checks the file itself and explains what is wrong with it."""
    if not value:
        return None
    path = value.split(":")[0]
    if value.endswith(".pt2") or path.endswith(".py"):
        base = os.path.splitext(os.path.basename(path))[0]
        return "".join(c if c.isalnum() else "_" for c in base) or "model", value
    if value.endswith("_pt2e"):
        return value, value
    return None


def export_model(env, name, kernels, source=None):
    """build/gen/<kernels>/<name>/tvmgen_<name>.{h,c} + model.json, shared by every board.
    `source`: a model file or PT2E zoo variant (model=FILE) instead of the zoo model `name`."""
    import shlex
    gen = f"#build/gen/{kernels}/{name}"
    targets = [f"{gen}/tvmgen_{name}.h", f"{gen}/tvmgen_{name}.c", f"{gen}/model.json"]
    deps = compiler_sources()
    if source is None:
        ckpt = model_checkpoint(name)
    else:
        ckpt = os.path.abspath(source.split(":")[0])
    if ckpt and os.path.exists(ckpt):
        deps.append(ckpt)
    extra = ""
    if source is not None and env.get("calibration"):
        extra = f" --calibration {shlex.quote(env['calibration'])}"
    nodes = env.Command(targets, deps,
                        f"$PYTHON tools/export.py --model {shlex.quote(source or name)} --kernels {kernels} "
                        f"--out {Dir(gen).path} --quiet{extra}",
                        chdir=False)
    return nodes


def host_library(env, name, gen_nodes):
    host = env.Clone(CC=HOST_CC, CCFLAGS=HOST_CFLAGS, CPPPATH=[gen_nodes[0].dir], LIBS=["m"])
    return host.SharedLibrary(f"#build/host/{name}/{name}", [gen_nodes[1]])
