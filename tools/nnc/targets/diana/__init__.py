"""The DIANA target ("soma_dory, c"): digital-accelerator layers as DORY kernels, the rest as C.

DIANA (KU Leuven) is a RISC-V host core (RV32IMC) with a digital int8 accelerator (SoMa, a
16x16 PE array). One module per step, data flowing one way (no module imports a later one):

    hardware    memory sizes, clock, kernel sizes, placement names, the layout op's name
    partition   which ops meet the accelerator's constraints; the others fall back to C on the
                RISC-V core with a DianaFallbackWarning naming the layer and the constraint
    tiling      fits every accelerator layer into L1 (tiles of output rows x 16-channel groups)
                and estimates its cycles
    packing     the weight blob the accelerator reads ([K/16][C][FY][FX][16] + int32 biases)
    layout      reverse_words ops around accelerator ops, cancelled where pairs meet
    kernels     DORY-style C per accelerator layer, calling the HAL in firmware/diana/hal
    target      DianaTarget (nnc.targets.base.Target: passes, kernel providers, header lines,
                placement report, package),
                compile_diana -> DianaPackage
    firmware    RV32 build and QEMU run of the firmware; demo: its generated demo.c;
    examples    seed 004's graphs and HTVM's test grid, written with nnc.builder

The passes run in the order partition, tile, layout. The golden reference is nnc.reference.
"""
from .hardware import ACCEL, CPU, L1_ACT_BYTES, L1_WEIGHT_BYTES, L2_BYTES, REVERSE
from .layout import run_transformed
from .packing import pack_weights
from .partition import DianaFallbackWarning, accelerator_violations
from .target import DianaPackage, DianaTarget, compile_diana

__all__ = ["ACCEL", "CPU", "L1_ACT_BYTES", "L1_WEIGHT_BYTES", "L2_BYTES", "REVERSE",
           "DianaPackage", "DianaFallbackWarning", "DianaTarget", "accelerator_violations",
           "compile_diana", "pack_weights", "run_transformed"]
