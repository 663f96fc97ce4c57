"""Compiler flags of each target, in one place (used by SCons and by the Python tools)."""

# The host library: warning-free generated C, float semantics kept (no FMA contraction).
HOST_CC = "gcc"
HOST_CFLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off"]

# The reliability tier: the same C under AddressSanitizer and UndefinedBehaviorSanitizer; any
# finding aborts the run (no recovery), so a test sees it as a non-zero exit.
SANITIZER_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"]

CORTEX_M7_CC = "arm-none-eabi-gcc"
CORTEX_M7_FLAGS = ["-mcpu=cortex-m7", "-mthumb", "-mfpu=fpv5-sp-d16", "-mfloat-abi=hard"]

RV32_CC = "riscv64-unknown-elf-gcc"
# -misa-spec=2.2 keeps the rv32im multilib; picolibc provides the C headers and library.
RV32_FLAGS = ["-march=rv32imc", "-misa-spec=2.2", "-mabi=ilp32", "--specs=picolibc.specs"]


def host_shared_library(sources, output, include_dirs=(), extra_flags=()):
    """Compile C sources into a shared library with the host flags; raises on failure."""
    import subprocess
    cmd = [HOST_CC, *HOST_CFLAGS, *extra_flags, "-fPIC", "-shared", "-o", output, *sources, "-lm"]
    for d in include_dirs:
        cmd[1:1] = ["-I", d]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr}")
    return output
