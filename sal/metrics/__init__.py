"""What a metric is: which way it scores, its bounds and ROPE, the names of event, instability and
per-class metrics. Imports only sal.core.
"""
