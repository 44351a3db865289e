"""Sharpness and connectivity of trained weights: pure torch, no I/O.
"""
