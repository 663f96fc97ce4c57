"""SCons glue: where things go and how a model becomes C and a host library.

Only build wiring lives here; the compiler is tools/nnc and the tools are tools/*.py.
"""
import hashlib
import json
import os

from SCons.Script import Action, AlwaysBuild, Dir

from argv_action import argv_action
from nnc.frontend.model_files import name_of
from nnc.outdir import MARKER as OUTPUT_MARKER
from nnc.toolchains import HOST_CC, HOST_CFLAGS

ROOT = Dir("#").abspath

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
    # the pinned torch/TVM versions are an input of the generated C too (a shared cache must not
    # hand one version's export to a checkout with another)
    return sorted(files) + [os.path.join(ROOT, "tools", "export.py"), os.path.join(ROOT, "requirements.txt")]


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
    if value.endswith(".pt2") or value.split(":")[0].endswith(".py"):
        return name_of(value), value
    if value.endswith("_pt2e"):
        return value, value
    return None


# The host inference program, build/host/<INFERENCE_APP>: no model may build as this name.
INFERENCE_APP = "inference"


def export_model(env, name, kernels, source=None, calibration=None, inputs=()):
    """build/gen/<kernels>/<name>/tvmgen_<name>.{h,c} + model.json, shared by every board.
    `source`: a model file or PT2E zoo variant (model=FILE, a models= list) instead of the zoo
    model `name`; `calibration`: its --calibration; `inputs`: more files the export reads."""
    gen = f"#build/gen/{kernels}/{name}"
    # the output folder's marker is a target too: a checkout that fetched the export from a shared
    # cache (cache=) must have it, or the next export would refuse to replace the folder
    targets = [f"{gen}/tvmgen_{name}.h", f"{gen}/tvmgen_{name}.c", f"{gen}/model.json", f"{gen}/{OUTPUT_MARKER}"]
    deps = compiler_sources()
    if source is None:
        ckpt = model_checkpoint(name)
    else:
        ckpt = os.path.abspath(source.split(":")[0])
    if ckpt and os.path.exists(ckpt):
        deps.append(ckpt)
    deps += [path for path in inputs if path not in deps]
    extra = ["--calibration", calibration] if calibration else []
    nodes = env.Command(targets + [f"{gen}/{SIGNATURES}"], deps,
                        [argv_action([env["PYTHON"], "tools/export.py", "--model", source or name,
                                      "--kernels", kernels, f"--out={Dir(gen).path}", "--quiet"] + extra,
                                     cwd=ROOT),
                         Action(_record_signatures, None)])
    # SCons deletes a target before rebuilding it: without its marker the exporter would refuse to
    # replace the folder (which holds the host library's object too), and a test or a compiler
    # reading the C while another build process repeats the export would find it missing. The
    # exporter replaces its files all at once itself (nnc.outdir), and not at all when unchanged.
    env.Precious(nodes)
    rebuild_if_edited(nodes)
    return nodes


# What the exporter wrote, recorded after each export: SCons rebuilds a target when its sources or
# its command change, not when the target itself changed (and it re-records the signature of a
# generated file each time the file is compiled), so a hand-edited or truncated file would stay.
SIGNATURES = ".export-signatures.json"


def _file_record(path: str, digest: str | None = None) -> dict:
    st = os.stat(path)
    if digest is None:
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
    return {"sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _record_signatures(target, source, env):
    record = {os.path.basename(str(t)): _file_record(str(t)) for t in target[:-1]}
    with open(str(target[-1]), "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
    return 0


def rebuild_if_edited(nodes):
    """Rebuilds the export when a generated file differs from what the exporter wrote (content:
    the file is only read when its size or time changed)."""
    *files, signatures = nodes
    try:
        with open(signatures.abspath) as f:
            record = json.load(f)
    except (OSError, ValueError):
        record = None
    for node in files:
        path = node.abspath
        if not os.path.exists(path):
            return        # SCons rebuilds a missing target anyway
        was = (record or {}).get(node.name)
        if not isinstance(was, dict):
            break
        st = os.stat(path)
        if (was.get("size"), was.get("mtime_ns")) == (st.st_size, st.st_mtime_ns):
            continue
        if _file_record(path)["sha256"] != was.get("sha256"):
            break
    else:
        return
    AlwaysBuild(nodes)


def host_library(env, name, gen_nodes):
    host = env.Clone(CC=HOST_CC, CCFLAGS=HOST_CFLAGS, CPPPATH=[gen_nodes[0].dir], LIBS=["m"])
    return host.SharedLibrary(f"#build/host/{name}/{name}", [gen_nodes[1]])
