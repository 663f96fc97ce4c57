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
