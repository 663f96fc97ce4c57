"""What the build reports about its outputs, as plain functions (no SCons): unit-tested on
committed fixture files (tests/unit/test_reports.py).

  sizes     `size -A` output and linker maps -> flash/RAM split into weights, code, arena, runtime
  linker    a linker script's MEMORY block; the board memory of the Cortex-M7 boards
  fit       ld's "region overflowed" errors -> the "does not fit" record and message
  header    what the build reads from a generated tvmgen_<name>.h (the input shape)
  bench     instruction counts + sizes -> the bench texts and the summary table over models
  diana     the DIANA firmware's console results and its summary table per graph
  regression  build/report.json (per model x board) and the baseline gate of `scons report`
"""
