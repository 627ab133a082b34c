"""stylebot's engine: Gatys et al. neural style transfer on VGG-19, as a library.

Importing `engine` (or `engine.jobs`) is cheap and TensorFlow-free; the heavy
modules are imported where they are used.
"""
