"""Compilers and flags of every target and board, in one place: the SCons build, the tests,
tools/plots.py and the DIANA/IMX681 builds all read them from here (TFLite Micro's one
flags-only file per target)."""
import os

# The repository (firmware/ holds the linker scripts and the flags file shared with RIOT's make).
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# ---- host (x86-64 shared libraries, the IMX681 frame library and runtime) -------------------
# Warning-free generated C, float semantics kept (no FMA contraction).
HOST_CC = "gcc"
HOST_CFLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off"]

# The reliability tier: the same C under AddressSanitizer and UndefinedBehaviorSanitizer; any
# finding aborts the run (no recovery), so a test sees it as a non-zero exit.
SANITIZER_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"]

# ---- Cortex-M7 (stm32f746g-disco, mps2-an500: firmware/riot) --------------------------------
CORTEX_M7_CC = "arm-none-eabi-gcc"
CORTEX_M7_OBJCOPY = "arm-none-eabi-objcopy"
CORTEX_M7_SIZE = "arm-none-eabi-size"
CORTEX_M7_FLAGS = ["-mcpu=cortex-m7", "-mthumb", "-mfpu=fpv5-sp-d16", "-mfloat-abi=hard"]
# The code generation flags of the model (-O2, -ffp-contract=off, -fsingle-precision-constant: the
# F746's FPU is single precision, a double operation would become a slow soft-float call). They
# live in firmware/riot/model.cflags because RIOT's make reads the same file: both builds then
# run the same machine code.
MODEL_CFLAGS_FILE = os.path.join(ROOT, "firmware", "riot", "model.cflags")


def _read_flags(path: str) -> list:
    with open(path) as f:
        return [flag for line in f if not line.startswith("#") for flag in line.split()]


CORTEX_M7_MODEL_CFLAGS = _read_flags(MODEL_CFLAGS_FILE)
# Every C file of the firmware: warnings are errors, one section per function for --gc-sections.
# -Wcast-align: RIOT compiles the model with it (and -Werror), so the bare-metal build and the
# warning-free tests must see the same warnings.
CORTEX_M7_CFLAGS = (CORTEX_M7_FLAGS + ["-std=c99", "-g", "-Wall", "-Wextra", "-Werror", "-Wcast-align",
                                       "-ffunction-sections", "-fdata-sections"] + CORTEX_M7_MODEL_CFLAGS)
# The application and board layer only (not the generated model).
CORTEX_M7_APP_FLAGS = ["-Wdouble-promotion", "-Wstrict-prototypes", "-Wshadow"]
CORTEX_M7_LINKFLAGS = CORTEX_M7_FLAGS + ["--specs=nano.specs", "-nostartfiles", "-Wl,--gc-sections"]

# The Cortex-M7 boards of firmware/riot: interrupt count of the vector table and what the board
# is. Flash and RAM sizes are read from the board's linker script (nnc.reports.linker).
CORTEX_M7_BOARDS = {
    "stm32f746g-disco": {"irqs": 98, "what": "STM32F746NG: 1 MiB flash, 320 KiB SRAM"},
    "mps2-an500": {"irqs": 32,
                   "what": "QEMU mps2-an500, memory clamped to the STM32F746's 1 MiB flash / 320 KiB SRAM"},
}
CORTEX_M7_BOARD_DIR = os.path.join(ROOT, "firmware", "riot", "board")


def linker_script(board: str) -> str:
    """The linker script of a Cortex-M7 board (firmware/riot/board/<board>/linker.ld)."""
    return os.path.join(CORTEX_M7_BOARD_DIR, board, "linker.ld")


# ---- RV32 (DIANA's host core) -----------------------------------------------------------------
RV32_CC = "riscv64-unknown-elf-gcc"
# -misa-spec=2.2 keeps the rv32im multilib; picolibc provides the C headers and library.
RV32_ARCH_FLAGS = ["-march=rv32imc", "-misa-spec=2.2", "-mabi=ilp32"]
RV32_FLAGS = RV32_ARCH_FLAGS + ["--specs=picolibc.specs"]

# DIANA firmware (firmware/diana, bare metal on qemu-system-riscv32 -M virt): the code model of
# its memory map, the host's warning and float flags, sections for --gc-sections, the board's
# linker script.
DIANA_ARCH_FLAGS = RV32_ARCH_FLAGS + ["-mcmodel=medany"]
DIANA_CFLAGS = (DIANA_ARCH_FLAGS + ["-ffreestanding"] + HOST_CFLAGS
                + ["-ffunction-sections", "-fdata-sections", "--specs=picolibc.specs"])
DIANA_LINKER_SCRIPT = os.path.join(ROOT, "firmware", "diana", "board", "link.ld")
DIANA_LINKFLAGS = DIANA_ARCH_FLAGS + ["--specs=picolibc.specs", "-nostartfiles", "-Wl,--gc-sections",
                                      "-Wl,--no-warn-rwx-segments", "-T", DIANA_LINKER_SCRIPT]

# ---- every C compiler the generated C must compile warning-free with --------------------------
# compiler -> the flags its target compiles the model with (each has -Wall -Wextra -Werror): the
# tests compile generated C with these.
WARNING_FREE_FLAGS = {
    HOST_CC: HOST_CFLAGS,
    CORTEX_M7_CC: CORTEX_M7_CFLAGS,
    RV32_CC: RV32_FLAGS + HOST_CFLAGS,
}


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
