"""Target-independent graph passes."""
from __future__ import annotations

from .errors import NncError
from .ir import Graph, Op, Tensor

LAYOUTS = ("nchw", "nhwc")


def apply_input_layout(graph: Graph, layout: str) -> None:
    """Make 4-D inputs arrive in `layout`; the model keeps computing in NCHW.

    For NHWC a transpose op is put in front of the first layer, so the caller passes the
    image as it comes from a camera or a TFLite-style pipeline.
    """
    if layout not in LAYOUTS:
        raise NncError(f"unknown input layout {layout!r}", "input layout option",
                       f"use one of {', '.join(LAYOUTS)}")
    if layout == "nchw":
        return
    for i, t in enumerate(graph.inputs):
        if len(t.shape) != 4:
            continue
        n, c, h, w = t.shape
        boundary = Tensor(t.name, (n, h, w, c), t.dtype, t.qparams)
        t.name = f"{t.name}_nchw"
        graph.inputs[i] = boundary
        graph.ops.insert(0, Op("transpose", f"{boundary.name}_to_nchw", [boundary], [t],
                               {"perm": (0, 3, 1, 2)}))
    graph.meta["input_layout"] = layout


def fuse_conv_maxpool(graph: Graph, accepts) -> None:
    """Fuse each conv2d with the max pool that alone reads its output, where `accepts(op)`.

    The fused op (kind conv2d_maxpool2d) never stores the convolution's output: the arena holds
    only the pooled tensor, which is what makes LeNet-5 fit in 6 KB of RAM. It is exact for any
    kernel: requantization is monotonic (positive multiplier, round, clamp), so the max of the
    requantized values is the requantized max of the accumulators. `accepts` is asked with the
    fused op; a target whose kernels cannot run it keeps the two ops.
    """
    protected = {id(t.storage()) for t in graph.inputs + graph.outputs}
    for conv in list(graph.ops):
        if conv.kind != "conv2d" or id(conv.output) in protected:
            continue
        readers = graph.consumers(conv.output)
        if len(readers) != 1 or readers[0].kind != "maxpool2d":
            continue
        pool = readers[0]
        if pool.output.qparams != conv.output.qparams:
            continue
        attrs = dict(conv.attrs, pool=dict(pool.attrs), conv_shape=tuple(conv.output.shape),
                     conv_name=conv.name, pool_name=pool.name)
        fused = Op("conv2d_maxpool2d", f"{conv.name}+{pool.name}", list(conv.inputs),
                   list(pool.outputs), attrs, conv.params)
        if not accepts(fused):
            continue
        graph.ops[graph.ops.index(conv)] = fused
        graph.ops.remove(pool)


def conv_maxpool_parts(op: Op) -> tuple:
    """The conv2d and maxpool2d ops a conv2d_maxpool2d stands for (the reference runs them)."""
    a = dict(op.attrs)
    pool_attrs = a.pop("pool")
    conv_shape = a.pop("conv_shape")
    conv_name, pool_name = a.pop("conv_name"), a.pop("pool_name")
    between = Tensor(conv_name, conv_shape, op.output.dtype, op.output.qparams)
    return (Op("conv2d", conv_name, list(op.inputs), [between], a, op.params),
            Op("maxpool2d", pool_name, [between], list(op.outputs), pool_attrs))
