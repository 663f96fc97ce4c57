"""The fast tier: no build, no compiler, no emulator. Property tests run derandomized (the same
examples every run), so a failure here is reproducible."""
