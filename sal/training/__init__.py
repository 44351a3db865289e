"""One run (or one group of packed seeds) from spec to Result: data, models, plug-ins, the epoch
loop, checkpoints and the measurements taken during a run. No I/O of its own except checkpoints.
"""
