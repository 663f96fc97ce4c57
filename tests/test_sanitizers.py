"""The reliability tier: the generated C of every stateless zoo model (portable and Cortex-M7
kernels) under AddressSanitizer and UndefinedBehaviorSanitizer (gcc, -fno-sanitize-recover=all: the first finding aborts), on 1000
inputs per model (ResNet-50: 20 by default, 1000 with `./scons host test full=1`), bit-exact
against torch qnnpack.

The C runs in a small executable (not the Python process: the sanitizer runtimes must come
first), its input and output buffers on the heap with exactly the sizes the header gives, so a
write or read one byte past them is a finding too.
"""
import os
import subprocess

import numpy as np
import pytest

from conftest import generated_dir

from hostlib import parse_header
from nnc.toolchains import HOST_CC, HOST_CFLAGS, SANITIZER_FLAGS
from test_zoo_bitexact import inputs_and_torch_outputs, zoo_models

ENV = dict(os.environ, ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:exitcode=99",
           UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=98")


def driver_source(info) -> str:
    """main(): read samples from stdin (inputs in order), run, write the outputs to stdout."""
    prefix = info["prefix"]
    ports = [("input", p) for p in info["inputs"]] + [("output", p) for p in info["outputs"]]
    lines = ["#include <stdio.h>", "#include <stdlib.h>", f'#include "{prefix}.h"', "",
             "int main(void)", "{",
             f"    struct {prefix}_inputs in;", f"    struct {prefix}_outputs out;"]
    for kind, p in ports:
        lines += [f"    int8_t* {p.name} = malloc({p.size});", f"    if (!{p.name}) return 2;",
                  f"    {'in' if kind == 'input' else 'out'}.{p.name} = {p.name};"]
    lines += ["    for (;;) {"]
    for kind, p in ports:
        if kind == "input":
            lines.append(f"        if (fread({p.name}, 1, {p.size}, stdin) != {p.size}) break;")
    lines.append(f"        if ({prefix}_run(&in, &out) != 0) return 3;")
    for kind, p in ports:
        if kind == "output":
            lines.append(f"        if (fwrite({p.name}, 1, {p.size}, stdout) != {p.size}) return 4;")
    lines += ["    }"] + [f"    free({p.name});" for _, p in ports] + ["    return 0;", "}", ""]
    return "\n".join(lines)


@pytest.mark.parametrize("kernels", ["c", "m7"])
@pytest.mark.parametrize("name", zoo_models())
def test_generated_c_is_clean_under_asan_and_ubsan(name, kernels, zoo, tmp_path):
    """The portable kernels (build/gen/c) and the Cortex-M7 kernels with their portable
    definitions of the DSP intrinsics (exported here: the board build is not a prerequisite)."""
    spec = zoo[name]
    if kernels == "c":
        gen = generated_dir(name)
        source, header = (os.path.join(gen, f"tvmgen_{name}{ext}") for ext in (".c", ".h"))
        if not os.path.exists(source):
            pytest.fail(f"{source} is missing: run the tests through `./scons host test`")
    else:
        from nnc.cli.export import compile_model
        gen = str(tmp_path / "gen")
        header, source = compile_model(name, kernels)[2].write(gen)
    info = parse_header(header)
    assert len(info["inputs"]) == 1
    driver = tmp_path / "driver.c"
    driver.write_text(driver_source(info))
    exe = str(tmp_path / "sanitized")
    flags = [f for f in HOST_CFLAGS if not f.startswith("-O")] + ["-O1"] + SANITIZER_FLAGS
    r = subprocess.run([HOST_CC, *flags, "-I", gen, "-o", exe, source, str(driver), "-lm"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr

    x, expected = inputs_and_torch_outputs(name, spec, seed=13)
    n = len(x)
    assert x.shape[1:] == info["inputs"][0].shape[1:]
    r = subprocess.run([exe], input=np.ascontiguousarray(x).tobytes(), capture_output=True, env=ENV)
    findings = r.stderr.decode(errors="replace")
    assert r.returncode == 0 and "runtime error" not in findings and "Sanitizer" not in findings, \
        f"{name}: exit {r.returncode}\n{findings[-4000:]}"
    out = info["outputs"][0]
    got = np.frombuffer(r.stdout, dtype=np.int8)
    assert got.size == n * out.size, f"{name}: {got.size} output bytes for {n} inputs"
    mismatches = int(np.count_nonzero(got.reshape(expected.shape) != expected))
    assert mismatches == 0, f"{name}: {mismatches} of {expected.size} elements differ from torch qnnpack"
