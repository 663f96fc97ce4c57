"""What the build reads from a generated header (tvmgen_<name>.h)."""
from __future__ import annotations

import re


def input_shape(header_text: str):
    """The shape of the model's first input (its _INPUT0_SHAPE), or None."""
    m = re.search(r"#define TVMGEN_\w+_INPUT0_SHAPE \{([^}]*)\}", header_text)
    return tuple(int(v) for v in m.group(1).split(",")) if m else None


def is_digit_image(shape) -> bool:
    """A single-channel square image (NCHW or NHWC): the held-out digits fit it."""
    if not shape or len(shape) != 4:
        return False
    _n, a, b, c = shape
    return (a == 1 and b == c) or (c == 1 and a == b)


def samples_args(header_path: str, count: int | None = None) -> list:
    """The serial client's inputs for a model: the held-out digits (then random images, with
    `count`) for digit-like inputs; random inputs otherwise (10, or `count`)."""
    try:
        with open(header_path) as f:
            shape = input_shape(f.read())
    except OSError:
        shape = None
    if count is None:
        return ["--dataset", "digits"] if is_digit_image(shape) else ["--random", "10"]
    if is_digit_image(shape):
        return ["--dataset", "digits", "--random", str(count), "--count", str(count)]
    return ["--random", str(count), "--count", str(count)]
