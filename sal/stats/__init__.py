"""Which runs are results and what they say: paired tests, intervals, corrections, the factorial,
attribution and the hierarchical model (docs/statistics.md).
"""
