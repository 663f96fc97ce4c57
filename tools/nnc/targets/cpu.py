"""The cpu target (host x86-64 and the STM32's Cortex-M7): qnnpack arithmetic, portable C."""
from __future__ import annotations

from ..kernels.c_kernels import PortableCKernels
from .base import Target


class CpuTarget(Target):
    name = "cpu"
    golden_reference = "torch qnnpack (eager mode), reproduced by nnc.reference"

    def __init__(self, kernels: str = "c"):
        self.kernel_choice = kernels

    def kernel_providers(self):
        providers = []
        if self.kernel_choice == "tvm":
            from ..kernels.tvm_kernels import TvmKernels
            providers.append(TvmKernels())
        elif self.kernel_choice == "m7":
            from ..kernels.m7_cat import M7Cat
            from ..kernels.m7_kernels import M7Kernels
            from ..kernels.m7_lut import M7Lut
            from ..kernels.m7_pool import M7AvgPool
            from ..kernels.m7_small_k import M7SmallK
            providers += [M7SmallK(), M7Kernels(), M7Lut(), M7AvgPool(), M7Cat()]
        providers.append(PortableCKernels())
        return providers
