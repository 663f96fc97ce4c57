"""DIANA's facts, in one place: memory sizes, clock, the accelerator's kernel sizes, where an op
can run, and the name of the word-reversal layout op."""
from __future__ import annotations

L1_ACT_BYTES = 256000
L1_WEIGHT_BYTES = 64000
L2_BYTES = 512000
CLOCK_HZ = 100_000_000
PEAK_MACS_PER_CYCLE = 256
KERNEL_SIZES = (1, 3, 5, 7)

# The layout op (a CPU op: HTVM's fused reshape_reverse_reshape), declared in nnc.ir.OP_KINDS.
REVERSE = "reverse_words"

ACCEL = "accelerator"
CPU = "cpu"


def ceil16(n: int) -> int:
    return (n + 15) // 16


def align4(n: int) -> int:
    return (n + 3) // 4 * 4


def words(nbytes: int) -> int:
    """32-bit words moved for `nbytes` bytes (the DMA moves one word per cycle)."""
    return (nbytes + 3) // 4
