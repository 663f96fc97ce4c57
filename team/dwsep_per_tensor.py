"""The team's factory file (listed in models.txt): dwsep_pt2e's trained depthwise-separable block,
quantized with one weight scale per tensor instead of one per output channel, so that the daily
matrix's table shows both variants' footprints side by side. It returns the converted program, so
its line needs no calibration=.

    nnc export --model team/dwsep_per_tensor.py:build --out gen/
"""
from models import pt2e_zoo


def build():
    from nnc.frontend.pt2e_quantizer import quantize_pt2e
    spec = pt2e_zoo.MODELS["dwsep_pt2e"]
    example = spec.example_input()
    calibration = list(spec.calibration_inputs(pt2e_zoo.CALIBRATION))
    return quantize_pt2e(spec.load_float(), example, calibration, False, False), example
