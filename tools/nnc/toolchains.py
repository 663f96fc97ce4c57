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
RV32_ARCH_FLAGS = ["-march=rv32imc", "-misa-spec=2.2", "-mabi=ilp32"]
RV32_FLAGS = RV32_ARCH_FLAGS + ["--specs=picolibc.specs"]

# DIANA firmware (firmware/diana, bare metal on qemu-system-riscv32 -M virt): the code model of
# its memory map, the host's warning and float flags, sections for --gc-sections. The board's
# linker script (-T) is added by nnc.targets.diana.firmware.
DIANA_ARCH_FLAGS = RV32_ARCH_FLAGS + ["-mcmodel=medany"]
DIANA_CFLAGS = (DIANA_ARCH_FLAGS + ["-ffreestanding"] + HOST_CFLAGS
                + ["-ffunction-sections", "-fdata-sections", "--specs=picolibc.specs"])
DIANA_LINKFLAGS = DIANA_ARCH_FLAGS + ["--specs=picolibc.specs", "-nostartfiles", "-Wl,--gc-sections",
                                      "-Wl,--no-warn-rwx-segments"]


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
