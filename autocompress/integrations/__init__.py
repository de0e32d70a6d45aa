"""Integrations with outside services (Ray, MLflow); each module imports its service lazily."""

__all__: list[str] = []  # the modules are the surface: ``integrations.mlflow.MlflowTracker``
