"""DIANA accelerator kernels: DORY-style layer functions that stream tiles through L1.

Each accelerator layer becomes one C function that, per tile, copies the input tile (and the
tile's packed weights) from L2 to L1 with the HAL's DMA model, calls the DORY kernel entry point
(digital_conv_2d, digital_depthwise_conv_2d, digital_fully_connected, digital_element_wise_sum)
and copies the output tile back to L2. Activations arrive and leave word-reversed (the layout
pass put reverse_words ops around them); weights are the packed blob of `packing.pack_weights`.
The `reverse_words` layout op itself is plain C on the RISC-V.

The tile sizes come from the target's tiler (op.attrs["diana_tiling"]); the HAL is
firmware/diana/hal (include path needed: -I firmware/diana/hal).
"""
from __future__ import annotations

from ...kernels import Kernel, KernelProvider
from .hardware import ACCEL, L1_ACT_BYTES, L1_WEIGHT_BYTES, REVERSE
from .packing import pack_weights
from .tiling import conv_geometry

HAL_INCLUDE = '#include "diana_hal.h"\n'


def _prologue(function: str, t) -> str:
    """The start of an accelerator layer's C function: its L1 buffers (input tile, then output
    tile; weights in their own L1)."""
    return f"""\
static void {function}(const int8_t* input, int8_t* output, const int8_t* weights)
{{
    int8_t* const l1_in = DIANA_L1_ACT;
    int8_t* const l1_out = DIANA_L1_ACT + {t.in_tile_bytes};
    int8_t* const l1_w = DIANA_L1_WEIGHTS;"""


class DianaKernels(KernelProvider):
    name = "diana"

    def supports(self, op) -> bool:
        return op.kind == REVERSE or op.attrs.get("diana_placement") == ACCEL

    def emit(self, op, function: str) -> Kernel:
        if op.kind == REVERSE:
            return self._reverse(op, function)
        if op.kind == "conv2d":
            return self._conv(op, function)
        if op.kind == "dense":
            return self._dense(op, function)
        if op.kind == "add":
            return self._add(op, function)
        raise ValueError(f"{op.name}: no DIANA kernel for {op.kind}")

    # -- layout ----------------------------------------------------------------------------------
    def _reverse(self, op, function):
        n = op.output.size
        src = f"""\
/* {op.name}: word reversal of {n} bytes (DIANA accelerator layout), on the RISC-V core. */
static void {function}(const int8_t* input, int8_t* output)
{{
    for (int32_t i = 0; i < {n}; i += 4) {{
        const int8_t b0 = input[i], b1 = input[i + 1], b2 = input[i + 2], b3 = input[i + 3];
        output[i] = b3;
        output[i + 1] = b2;
        output[i + 2] = b1;
        output[i + 3] = b0;
    }}
}}
"""
        return Kernel(function, src, ["in0", "out0"], {}, "diana-layout")

    # -- conv2d / depthwise ----------------------------------------------------------------------
    def _conv(self, op, function):
        t = op.attrs["diana_tiling"]
        g = conv_geometry(op)
        c, h, w, k, oh, ow, fy, fx, s = (g[x] for x in ("c", "h", "w", "k", "oh", "ow", "fy", "fx", "s"))
        pt, pl, block = g["pt"], g["pl"], g["block"]
        pr = max(0, (ow - 1) * s + fx - pl - w)
        dw = g["depthwise"]
        entry = "digital_depthwise_conv_2d" if dw else "digital_conv_2d"
        kt, ht = t.k_tile, t.h_tile
        blob = pack_weights(op)
        w_bytes = -(-k // 16) * block
        cin = "kn" if dw else str(c)
        c0 = "k0" if dw else "0"
        a = op.attrs
        src = f"""\
/* {op.name}: DIANA digital accelerator, {entry}: {c}x{h}x{w} -> {k}x{oh}x{ow},
 * kernel {fy}x{fx}, stride {s}, padding ({pt}, {pl}), >> {a['shift']}{', ReLU' if a['relu'] else ''}.
 * Tiling: {t.describe()} ({t.k_tile} output channels x {t.h_tile} output rows per tile):
 * L1 input tile <= {t.in_tile_bytes} B + output tile <= {t.out_tile_bytes} B (of {L1_ACT_BYTES} B),
 * weights+bias tile {t.weight_tile_bytes} B (of {L1_WEIGHT_BYTES} B). Estimated {t.cycles} cycles. */
{_prologue(function, t)}
    Layer_parameters layer;
    layer.cx = {w};
    layer.fx = {fx};
    layer.fy = {fy};
    layer.ox = {ow};
    layer.stride = {s};
    layer.padding_left = {pl};
    layer.padding_right = {pr};
    layer.activation = {1 if a['relu'] or a['clamp'][0] == 0 else 0};
    layer.output_shift = {a['shift']};
    for (int32_t k0 = 0; k0 < {k}; k0 += {kt}) {{
        const int32_t kn = {k} - k0 < {kt} ? {k} - k0 : {kt};
        const int32_t blocks = (kn + 15) / 16;
        /* weights of 16-channel blocks k0/16.., then their biases */
        diana_dma_words(l1_w, weights + (k0 / 16) * {block}, blocks * {block});
        diana_dma_words(l1_w + blocks * {block}, weights + {w_bytes} + 4 * k0, 64 * blocks);
        layer.c = {cin};
        layer.k = kn;
        for (int32_t y0 = 0; y0 < {oh}; y0 += {ht}) {{
            const int32_t yn = {oh} - y0 < {ht} ? {oh} - y0 : {ht};
            const int32_t first = y0 * {s} - {pt};
            const int32_t last = (y0 + yn - 1) * {s} - {pt} + {fy};
            const int32_t iy0 = first < 0 ? 0 : first;
            const int32_t iy1 = last > {h} ? {h} : last;
            diana_dma_3d(l1_in, 0, (iy1 - iy0) * {w}, {w},
                         input, {c0} * {h * w} + iy0 * {w}, {h * w}, {w},
                         {cin}, iy1 - iy0, {w});
            layer.cy = iy1 - iy0;
            layer.oy = yn;
            layer.padding_top = iy0 - first;
            layer.padding_bottom = last - iy1;
            diana_check({entry}(input, l1_in, weights, l1_w, l1_out, &layer));
            diana_dma_3d(output, k0 * {oh * ow} + y0 * {ow}, {oh * ow}, {ow},
                         l1_out, 0, yn * {ow}, {ow}, kn, yn, {ow});
        }}
    }}
}}
"""
        return Kernel(function, src, ["in0", "out0", "const:weights"], {"weights": blob}, self.name,
                      {"diana_hal": HAL_INCLUDE})

    # -- dense -----------------------------------------------------------------------------------
    def _dense(self, op, function):
        t = op.attrs["diana_tiling"]
        k, c = op.params["weight"].shape
        block = 16 * (-(-c // 16) * 16)
        w_bytes = -(-k // 16) * block
        kt = t.k_tile
        a = op.attrs
        src = f"""\
/* {op.name}: DIANA digital accelerator, digital_fully_connected {c} -> {k}, >> {a['shift']}
 * {', ReLU' if a['relu'] else ''}. Tiling: {t.describe()} ({kt} outputs per tile; weights+bias
 * tile {t.weight_tile_bytes} B of {L1_WEIGHT_BYTES} B). Estimated {t.cycles} cycles. */
{_prologue(function, t)}
    Layer_parameters layer = {{0}};
    layer.c = {c};
    layer.cx = 1;
    layer.cy = 1;
    layer.fx = 1;
    layer.fy = 1;
    layer.ox = 1;
    layer.oy = 1;
    layer.stride = 1;
    layer.activation = {1 if a['relu'] or a['clamp'][0] == 0 else 0};
    layer.output_shift = {a['shift']};
    diana_dma_words(l1_in, input, {c});
    for (int32_t k0 = 0; k0 < {k}; k0 += {kt}) {{
        const int32_t kn = {k} - k0 < {kt} ? {k} - k0 : {kt};
        const int32_t blocks = (kn + 15) / 16;
        diana_dma_words(l1_w, weights + (k0 / 16) * {block}, blocks * {block});
        diana_dma_words(l1_w + blocks * {block}, weights + {w_bytes} + 4 * k0, 64 * blocks);
        layer.k = kn;
        diana_check(digital_fully_connected(input, l1_in, weights, l1_w, l1_out, &layer));
        diana_dma_3d(output, k0, 0, 0, l1_out, 0, 0, 0, 1, 1, kn);
    }}
}}
"""
        return Kernel(function, src, ["in0", "out0", "const:weights"], {"weights": pack_weights(op)},
                      self.name, {"diana_hal": HAL_INCLUDE})

    # -- add -------------------------------------------------------------------------------------
    def _add(self, op, function):
        t = op.attrs["diana_tiling"]
        n, nt = op.output.size, t.n_tile
        a = op.attrs
        src = f"""\
/* {op.name}: DIANA digital accelerator, digital_element_wise_sum of {n} elements, >> {a['shift']}
 * {', ReLU' if a['relu'] else ''}. Tiling: {t.describe()}. Estimated {t.cycles} cycles. */
static void {function}(const int8_t* input0, const int8_t* input1, int8_t* output)
{{
    int8_t* const l1_a = DIANA_L1_ACT;
    int8_t* const l1_b = DIANA_L1_ACT + {nt};
    int8_t* const l1_out = DIANA_L1_ACT + {2 * nt};
    Layer_parameters layer = {{0}};
    layer.c = 1;
    layer.cx = 4;     /* n = c * cy * cx elements: words of 4 */
    layer.activation = {1 if a['relu'] or a['clamp'][0] == 0 else 0};
    layer.output_shift = {a['shift']};
    for (int32_t i0 = 0; i0 < {n}; i0 += {nt}) {{
        const int32_t m = {n} - i0 < {nt} ? {n} - i0 : {nt};
        diana_dma_words(l1_a, input0 + i0, m);
        diana_dma_words(l1_b, input1 + i0, m);
        layer.cy = m / 4;
        diana_check(digital_element_wise_sum(input0, l1_a, input1, l1_b, l1_out, &layer));
        diana_dma_words(output + i0, l1_out, m);
    }}
}}
"""
        return Kernel(function, src, ["in0", "in1", "out0"], {}, self.name, {"diana_hal": HAL_INCLUDE})
