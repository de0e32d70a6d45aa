"""Integrations with outside services (Ray, MLflow); each module imports its service lazily.

``tracker`` holds the :class:`Tracker` protocol a search reports to and the trial states;
``mlflow.MlflowTracker`` is the tracker shipped.
"""

from autocompress.integrations.tracker import STATES, PolishTracker, Tracker, TrialState

__all__ = ["STATES", "PolishTracker", "Tracker", "TrialState"]
