"""Runs into MLflow and back into pandas (the only layer that imports mlflow), the store's URI and
the MLflow UI process.
"""
