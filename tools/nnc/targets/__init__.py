"""Targets behind one interface (base.Target): cpu (host, Cortex-M7), diana/ (RISC-V + digital
accelerator), imx681/ (Sony's vision sensor: states, memory regions, images). Each is imported
by name (`from nnc.targets.cpu import CpuTarget`): importing this package loads none of them."""
