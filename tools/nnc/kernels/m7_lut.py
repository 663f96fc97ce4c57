"""Cortex-M7 kernel for the `lut` op: a 256-entry int8 table applied to every element.

The portable kernel spends a sign-extending byte load, a table load and a byte store per element
plus the loop. Here the work is done four codes at a time:
- the table is rearranged at export so that it is indexed by the code's raw byte (0..255) instead
  of code + 128: entry u holds f(code) for the code whose byte is u. Extracting a byte of a word
  (`uxtb`, `ubfx`, `lsr #24`) then gives the index directly, with no sign extension or offset;
- one 32-bit load brings four codes, four table loads (`ldrb` with a register offset; the table
  is a constant array, in flash) give four results, merged by three `orr` into one 32-bit store;
- two words per pass (eight elements) share the loop's compare and branch; the 0..7 elements left
  over take a byte loop;
- the table pointer is kept opaque to the optimiser, so every lookup is one `ldrb` with a register
  offset (gcc otherwise folds the constant table's address into an extra add per element).
Loads and stores go through memcpy (one LDR/STR on the M7, which allows unaligned access), so a
tensor that aliases a slice at any byte offset works; input and output may be the same buffer
(every word is read before it is written).
"""
from __future__ import annotations

import numpy as np

from . import Kernel, KernelProvider
from .c_kernels import _signature
from .m7_kernels import INTRINSICS

OPAQUE = """\
/* Keeps a pointer in a register of its own: otherwise gcc may fold a constant table's address
 * into every lookup as (shared base + index) + offset, one more instruction per element. */
#if defined(__GNUC__)
#define NNC_M7_OPAQUE(p) __asm__("" : "+r"(p))
#else
#define NNC_M7_OPAQUE(p) ((void)0)
#endif
"""

LOOKUP4 = """\
/* Four int8 codes in one word -> their four table entries in one word; `t` is indexed by the
 * raw byte of a code (see byte_indexed_table). */
static inline uint32_t nnc_m7_lookup4(const uint8_t* t, uint32_t v)
{
    return (uint32_t)t[v & 0xFFu] | ((uint32_t)t[(v >> 8) & 0xFFu] << 8)
         | ((uint32_t)t[(v >> 16) & 0xFFu] << 16) | ((uint32_t)t[v >> 24] << 24);
}
"""


def byte_indexed_table(table: np.ndarray) -> np.ndarray:
    """The IR's table (entry code + 128) reordered so that entry u is for the code whose byte is u:
    codes 0..127 first, then -128..-1."""
    table = np.asarray(table, dtype=np.int8)
    if table.shape != (256,):
        raise ValueError(f"a lut table has 256 entries, not {table.shape}")
    return np.concatenate([table[128:], table[:128]])


class M7Lut(KernelProvider):
    """Table lookup, four codes per 32-bit load and store."""
    name = "m7"

    def supports(self, op) -> bool:
        return op.kind == "lut"

    def emit(self, op, function: str) -> Kernel:
        n = op.output.size
        consts = {"table": byte_indexed_table(op.params["table"])}
        words, rest = divmod(n, 8)
        body = ""
        if words:
            body += f"""\
    for (int32_t i = 0; i < {words * 8}; i += 8) {{
        const uint32_t v0 = nnc_m7_load32(input + i), v1 = nnc_m7_load32(input + i + 4);
        nnc_m7_store32(output + i, nnc_m7_lookup4(t, v0));
        nnc_m7_store32(output + i + 4, nnc_m7_lookup4(t, v1));
    }}
"""
        if rest:
            body += f"""\
    for (int32_t i = {words * 8}; i < {n}; ++i) {{
        output[i] = (int8_t)t[(uint8_t)input[i]];
    }}
"""
        src = f"""\
/* {op.name}: {op.attrs.get('function', 'table')} on {n} elements through a 256-entry table made at
 * export from the reference function on every code. Cortex-M7 kernel: the table indexed by the
 * code's raw byte, four codes per 32-bit load and store, two words per pass. */
NNC_M7_NOINLINE {_signature(function, ["const int8_t* table"])}
{{
    const uint8_t* t = (const uint8_t*)table;
    NNC_M7_OPAQUE(t);
{body}}}
"""
        prelude = {"m7_0_intrinsics": INTRINSICS, "m7_lut_lookup4": LOOKUP4,
                   "m7_lut_opaque": OPAQUE}
        return Kernel(function, src, ["in0", "out0", "const:table"], consts, self.name, prelude)
