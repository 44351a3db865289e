"""What the user asked for (run, study, analysis plan, landscape options), validated before any compute.
"""
