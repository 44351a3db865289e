"""The bottom layer: the strings stored data holds (tags, attributes, events, artifacts), the grid key,
strict spec models, YAML reading, secret masking, seeded RNG streams, interrupts, file locks and the
project root. Imports nothing from sal.
"""
