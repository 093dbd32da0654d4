"""lrwatch-mlflow: lrwatch reads the metrics of runs in MLflow's local file store (``mlruns/``).

Registered as the ``mlflow`` source (entry point group ``lrwatch.sources``); see ``source.py``
for the layout it reads and README.md for the configuration.
"""

from lrwatch_mlflow.source import MlflowConfig, MlflowMetricReader, MlflowSource

__all__ = ["MlflowConfig", "MlflowMetricReader", "MlflowSource"]
__version__ = "0.2.0"
