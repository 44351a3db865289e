"""What a command runs: ablation grids and their workers, studies, `sal compare`, `sal landscape`, and
the one set of checks made before any of them (launch).
"""
