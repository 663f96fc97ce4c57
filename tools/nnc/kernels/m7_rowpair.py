"""Column fill of the Cortex-M7 convolution kernel for 3-wide windows at stride 1, two neighbouring
output positions (ox, ox + 1) at once.

The generic fill copies every window value with a sign-extending byte load and a halfword store
(about 3.5 instructions per value with the loop). Here the two windows of a pass share their input
rows: one 32-bit load brings the 4 bytes x0..x3 that both windows read in a row, and two
`sxtb16` give P = (x0, x2) and Q = (x1, x3). Window a (x0, x1, x2) takes the word P and the
half x1, window b (x1, x2, x3) the word Q and the half x2; the halves of two rows make one more
word (`pkhbt`/`pkhtb`). So per two rows: 2 loads, 4 `sxtb16`, 2 packs and 6 word stores (two
pairs of them one `strd` each) for 12 column values, about 1 instruction per value.

The columns are then not in (ic, ky, kx) order: `tap_order` gives the order, and the weights are
permuted to it at export (the GEMM only needs columns and weight rows in the same order). Both
windows use the same order (window b is window a shifted by one).

Padding: a row above or below the image is the zero point; at the left edge (ix0 = -1) the word
is loaded from the row's start and shifted up by a byte, at the right edge (ix0 + 3 = w) from
w - 4 and shifted down, the free byte set to the zero point. Only positions whose windows touch
the padding take that path (a check per position, not per value); nothing reads outside a row.
"""
from __future__ import annotations

import numpy as np

ROW4 = """\
/* The 4 bytes x[ix0 .. ix0 + 3] of row iy of a plane (h rows of w), padding at the zero point:
 * zp4 is the zero point's byte in all four bytes; ix0 is -1 .. w - 3. */
NNC_M7_INLINE uint32_t nnc_m7_row4(const int8_t* plane, int32_t iy, int32_t ix0, int32_t h, int32_t w,
                                   uint32_t zp4)
{
    if ((uint32_t)iy >= (uint32_t)h) {
        return zp4;
    }
    const int8_t* const row = plane + iy * w;
    if (ix0 < 0) {
        return (nnc_m7_load32(row) << 8) | (zp4 & 0xFFu);
    }
    if (ix0 > w - 4) {
        return (nnc_m7_load32(row + w - 4) >> 8) | (zp4 << 24);
    }
    return nnc_m7_load32(row + ix0);
}

"""

def _border(name: str, comment: str, columns: str, pair_stores: list, advance: list, lone_stores: list) -> str:
    """C of the function that fills both columns of a pass whose windows touch the padding: the
    rows (ic, ky) in order, paired as in the straight-line code of the kernels, one row per
    iteration. `columns`: its column parameters; `pair_stores` / `lone_stores`: the statements
    that store the words of two rows (p0, q0 then p, q) / of a last lone row, `advance` the
    pointer steps after two rows."""
    def lines(statements, indent):
        return "".join(f"{indent}{x}\n" for x in statements)
    pad = " " * len(f"NNC_M7_NOINLINE static void {name}(")
    signature = (f"NNC_M7_NOINLINE static void {name}(const int8_t* input, {columns}, int32_t cin,\n"
                 f"{pad}int32_t kh, int32_t h, int32_t w,\n{pad}int32_t iy0, int32_t ix0, uint32_t zp4)")
    return f"""\
{comment}
{signature}
{{
    uint32_t p0 = 0, q0 = 0;
    int32_t pending = 0;
    for (int32_t ic = 0; ic < cin; ++ic) {{
        const int8_t* const plane = input + ic * h * w;
        for (int32_t ky = 0; ky < kh; ++ky) {{
            const uint32_t v = nnc_m7_row4(plane, iy0 + ky, ix0, h, w, zp4);
            const uint32_t p = nnc_m7_sxtb16(v), q = nnc_m7_sxtb16_ror8(v);
            if (!pending) {{
                p0 = p;
                q0 = q;
                pending = 1;
                continue;
            }}
{lines(pair_stores + advance, " " * 12)}            pending = 0;
        }}
    }}
    if (pending) {{
{lines(lone_stores, " " * 8)}    }}
}}
"""


# Separate columns a at ca and b at cb. One function for all layers (these passes are a minority;
# code size is not).
BORDER = _border(
    "nnc_m7_rowpair_border",
    "/* Both columns of a pass whose windows touch the padding (m7_rowpair). */",
    "int16_t* ca, int16_t* cb",
    ["NNC_M7_STORE2_AT(ca, 0, p0, p);", "nnc_m7_store32(ca + 4, nnc_m7_pkhbt16(q0, q));",
     "NNC_M7_STORE2_AT(cb, 0, q0, q);", "nnc_m7_store32(cb + 4, nnc_m7_pkhtb16(p, p0));"],
    ["ca += 6;", "cb += 6;"],
    ["NNC_M7_STORE2_AT(ca, 0, p0, q0 & 0xFFFFu);", "NNC_M7_STORE2_AT(cb, 0, q0, p0 >> 16);"])

# The columns interleaved word by word at cols (m7_pairs).
BORDER_PAIRS = _border(
    "nnc_m7_rowpair_border_pairs",
    "/* Both columns, interleaved word by word (m7_pairs), of a pass whose windows touch the padding. */",
    "int16_t* cols",
    ["NNC_M7_STORE2_AT(cols, 0, p0, q0);", "NNC_M7_STORE2_AT(cols, 8, p, q);",
     "NNC_M7_STORE2_AT(cols, 16, nnc_m7_pkhbt16(q0, q), nnc_m7_pkhtb16(p, p0));"],
    ["cols += 12;"],
    ["NNC_M7_STORE2_AT(cols, 0, p0, q0);", "NNC_M7_STORE2_AT(cols, 8, q0 & 0xFFFFu, p0 >> 16);"])


def applies(op) -> bool:
    """A conv2d (groups 1) with 3-wide windows, stride 1 and dilation 1 along x, at most one
    column of padding, an even output width (a pass's two positions share a row) and rows of at
    least 4 bytes."""
    if op.kind != "conv2d" or op.attrs["groups"] != 1:
        return False
    _, _, h, w = op.inputs[0].shape
    _, _, oh, ow = op.output.shape
    kh, kw = op.params["weight"].shape[2:]
    a = op.attrs
    return (kw == 3 and a["stride"][1] == 1 and tuple(a["dilation"]) == (1, 1)
            and a["padding"][1] <= 1 and ow % 2 == 0 and w >= 4 and oh * ow > 1)


def tap_order(rows: int) -> list:
    """Column slot -> index of the weight tap (flattened (ic, ky, kx), kx in 0..2) it holds, -1 for
    a slot that stays zero. `rows` = cin * kh window rows, paired in order."""
    order = []
    for r in range(0, rows - 1, 2):
        s = r + 1
        order += [3 * r, 3 * r + 2, 3 * s, 3 * s + 2, 3 * r + 1, 3 * s + 1]
    if rows % 2:
        r = rows - 1
        order += [3 * r, 3 * r + 2, 3 * r + 1, -1]
    return order


def reorder(weight2d: np.ndarray, order: list) -> np.ndarray:
    """[cout, K] weights -> [cout, len(order)] in the column's order (zeros at -1)."""
    out = np.zeros((weight2d.shape[0], len(order)), dtype=weight2d.dtype)
    for slot, tap in enumerate(order):
        if tap >= 0:
            out[:, slot] = weight2d[:, tap]
    return out


def _rows_code(rows, load, j, interleaved: bool) -> tuple:
    """C that fills the words of `rows` ((channel offset, ky) pairs, in column order) into both
    columns (at `ca` and `cb`, or interleaved at `c`, m7_pairs); returns it and the number of
    words written to each column."""
    def store(word, a_words, b_words):
        """Words a_words of column a and b_words of column b from column word `word` on."""
        if interleaved:
            return "".join(f"{j}    NNC_M7_STORE2_AT(c, {8 * (word + i)}, {a}, {b});\n"
                           for i, (a, b) in enumerate(zip(a_words, b_words)))
        code = ""
        for col, words in (("ca", a_words), ("cb", b_words)):
            code += f"{j}    NNC_M7_STORE2_AT({col}, {4 * word}, {words[0]}, {words[1]});\n"
            if len(words) == 3:
                code += f"{j}    nnc_m7_store32({col} + {2 * word + 4}, {words[2]});\n"
        return code

    lines, word = [], 0
    for i in range(0, len(rows) - 1, 2):
        lines.append(f"""\
{j}{{
{j}    const uint32_t v0 = {load(*rows[i])}, v1 = {load(*rows[i + 1])};
{j}    const uint32_t p0 = nnc_m7_sxtb16(v0), q0 = nnc_m7_sxtb16_ror8(v0);
{j}    const uint32_t p1 = nnc_m7_sxtb16(v1), q1 = nnc_m7_sxtb16_ror8(v1);
{store(word, ["p0", "p1", "nnc_m7_pkhbt16(q0, q1)"], ["q0", "q1", "nnc_m7_pkhtb16(p1, p0)"])}{j}}}
""")
        word += 3
    if len(rows) % 2:
        lines.append(f"""\
{j}{{
{j}    const uint32_t v0 = {load(*rows[-1])};
{j}    const uint32_t p0 = nnc_m7_sxtb16(v0), q0 = nnc_m7_sxtb16_ror8(v0);
{store(word, ["p0", "q0 & 0xFFFFu"], ["q0", "p0 >> 16"])}{j}}}
""")
        word += 2
    return "".join(lines), word


def emit_fill(op, kp: int, interleaved: bool = False) -> str:
    """C (indent 8) that fills the columns `col` (position p) and `col + kp` (p + 1), or both
    interleaved at `col` (m7_pairs), for the output row `oy`, column `ox` (even)."""
    _, cin, h, w = op.inputs[0].shape
    kh = int(op.params["weight"].shape[2])
    sh = op.attrs["stride"][0]
    ph, pw = op.attrs["padding"]
    zpb = op.inputs[0].qparams.zero_point & 0xFF
    zp4 = zpb * 0x01010101
    pairs = [(dc, ky) for dc in range(2) for ky in range(kh)]
    last = [(0, ky) for ky in range(kh)]

    def load(dc, ky):
        return f"nnc_m7_load32(xc + {dc * h * w + ky * w})"

    def loops(j):
        unit, words = _rows_code(pairs, load, j + "    ", interleaved)
        advance = f"c += {4 * words}" if interleaved else f"ca += {2 * words}, cb += {2 * words}"
        code = ""
        if cin >= 2:
            code += f"""\
{j}for (int32_t ic = 0; ic < {cin // 2 * 2}; ic += 2, {advance}) {{
{j}    const int8_t* const xc = x + ic * {h * w};
{unit}{j}}}
"""
        if cin % 2:
            code += f"{j}{{\n{j}    const int8_t* const xc = x + {(cin - 1) * h * w};\n"
            code += _rows_code(last, load, j + "    ", interleaved)[0] + f"{j}}}\n"
        return code

    iy0 = "oy" if sh == 1 else f"oy * {sh}"
    if interleaved:
        pointers = "int16_t* c = col;"
        border = f"nnc_m7_rowpair_border_pairs(input, col, {cin}, {kh}, {h}, {w}, iy0, ix0, 0x{zp4:08X}u);"
    else:
        pointers = f"int16_t* ca = col;\n            int16_t* cb = col + {kp};"
        border = f"nnc_m7_rowpair_border(input, col, col + {kp}, {cin}, {kh}, {h}, {w}, iy0, ix0, 0x{zp4:08X}u);"
    return f"""\
        /* both windows' rows, 4 input bytes per load (m7_rowpair) */
        const int32_t iy0 = {iy0} - {ph}, ix0 = ox - {pw};
        if (iy0 >= 0 && iy0 <= {h - kh} && ix0 >= 0 && ix0 <= {w - 4}) {{
            const int8_t* x = input + iy0 * {w} + ix0;
            {pointers}
{loops(" " * 12)}        }} else {{   /* a window touches the padding */
            {border}
        }}
"""
