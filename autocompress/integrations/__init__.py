"""Integrations with outside services (Ray, MLflow); each module imports its service lazily."""
