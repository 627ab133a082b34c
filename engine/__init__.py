"""stylebot's engine: Gatys et al. neural style transfer on VGG-19, as a library.

Importing `engine` (or `engine.jobs`) is cheap and TensorFlow-free; the heavy
modules are imported where they are used.
"""

import os as _os

# PyTorch's CPU threads (OpenMP) spin-wait between parallel regions by default. On a
# shared host, next to the bot or anything else, that spinning fights for the cores:
# a 512-px step measured 15x slower under load. Passive waiting costs little when the
# machine is idle. Set here because OpenMP reads it once, when torch is first
# imported (by `import keras` under KERAS_BACKEND=torch), and every entry point
# (CLI, worker, bench) imports `engine` first. A host can still override it.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
