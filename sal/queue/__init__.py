"""Optuna storages as a work queue: workers, progress, estimates and the checks made before anything
is written.
"""
