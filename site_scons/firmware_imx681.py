"""SCons wiring of board=imx681 (`scons board=imx681 model=stateful`). For every selected model:

  build/imx681/<model>/<config stem>/   the package of each configuration in firmware/imx681/configs
                                         whose MODEL is the model (C sources or I2C memory images,
                                         summary.txt, manifest.json); models without one use
                                         imx681_default.cfg
  build/imx681/<model>/host/lib<model>_frames.so
                                         the host frame library (hostlib/frames.py: run(frame) keeps
                                         the state, reset_state()), from the first C_SOURCES package
                                         (or, when every configuration makes images, from
                                         build/imx681/<model>/host/gen/)
  build/imx681/runtime/libimx681_runtime.so
                                         firmware/imx681/runtime: executes the memory images
                                         (hostlib/frames.py load_images())
Flags: nnc.toolchains (the host's); the compiler: tools/imx681_compile.py."""
from __future__ import annotations

import glob
import os

from SCons.Script import Exit

from argv_action import argv_action
from nnc_build import compiler_sources, model_checkpoint
from nnc import toolchains as tc
from nnc.errors import NncError
from nnc.targets.imx681 import parse_config


def _config(path):
    try:
        return parse_config(path)
    except NncError as e:
        print(e.format())
        Exit(2)


def _outputs(cfg, model, out_dir, mode):
    """The files the compiler writes for a configuration (SCons targets)."""
    name = cfg["NETWORK_NAME"] or model
    files = ["summary.txt", "manifest.json"]
    if mode == "C_SOURCES":
        files += [f"tvmgen_{name}.h", f"tvmgen_{name}.c"]
    else:
        files += [f"{name}_params.bin", f"{name}_static_data.bin", "images.txt"]
    return [os.path.join(out_dir, f) for f in files]


def firmware(env, board, models):
    """The packages, frame libraries and runtime of `models`, alias imx681; returns every node."""
    root = env.Dir("#").abspath
    here = os.path.join(root, "firmware", "imx681")
    default = os.path.join(here, "configs", "imx681_default.cfg")
    compiler = os.path.join(root, "tools", "imx681_compile.py")
    configs_all = [(p, _config(p)) for p in sorted(glob.glob(os.path.join(here, "configs", "*.cfg")))
                   if p != default]

    def compile_package(cfg_path, cfg, model, out_dir, mode, extra=()):
        deps = compiler_sources() + [cfg_path, compiler]
        ckpt = model_checkpoint(model)
        if ckpt and os.path.exists(ckpt):
            deps.append(ckpt)
        model_arg = [] if cfg["MODEL"] == model else ["--model", model]
        argv = [env["PYTHON"], compiler, f"--config={cfg_path}", *model_arg, f"--output-dir={out_dir}",
                "--quiet", *extra]
        return env.Command(_outputs(cfg, model, out_dir, mode), deps, argv_action(argv, cwd=root))

    # The sensor-side runtime that executes I2C_IMAGES packages, as a host library.
    rt_env = env.Clone(CC=tc.HOST_CC, CCFLAGS=tc.HOST_CFLAGS, LIBS=["m"])
    rt_dir = os.path.join(root, "build", "imx681", "runtime")
    nodes = list(rt_env.SharedLibrary(os.path.join(rt_dir, "imx681_runtime"), rt_env.SharedObject(
        os.path.join(rt_dir, "imx681_runtime"), os.path.join(here, "runtime", "imx681_runtime.c"))))
    for model in models:
        configs = [(p, c) for p, c in configs_all if c["MODEL"] == model] or [(default, _config(default))]
        base = os.path.join(root, "build", "imx681", model)
        sources = None
        for path, cfg in configs:
            stem = os.path.splitext(os.path.basename(path))[0]
            out = compile_package(path, cfg, model, os.path.join(base, stem), cfg["OUTPUT_MODE"])
            nodes += out
            if sources is None and cfg["OUTPUT_MODE"] == "C_SOURCES":
                sources = out
        if sources is None:   # only image packages: compile the first configuration as C sources too
            path, cfg = configs[0]
            sources = compile_package(path, cfg, model, os.path.join(base, "host", "gen"), "C_SOURCES",
                                      ("--set", "OUTPUT_MODE=C_SOURCES"))
            nodes += sources
        c_file = [n for n in sources if str(n).endswith(".c")][0]
        host = env.Clone(CC=tc.HOST_CC, CCFLAGS=tc.HOST_CFLAGS, CPPPATH=[c_file.dir], LIBS=["m"])
        # The object goes next to the library: the compiler recreates its output directory.
        obj = host.SharedObject(os.path.join(base, "host", "obj", os.path.basename(str(c_file))[:-2]), c_file)
        nodes += host.SharedLibrary(os.path.join(base, "host", f"{model}_frames"), obj)
        env.Alias(f"imx681-{model}", nodes)
    env.Alias("imx681", nodes)
    return nodes
