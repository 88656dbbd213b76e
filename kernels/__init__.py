"""The numba engine that generated dynamics plug into.

These modules are not imported from here: symode copies them next to each compiled
system's generated ``_dynamics`` module (see ``symode.cache``), where they import the
generated kernels as module globals so numba can cache the compiled engine.
"""
