"""What the server that trial processes are forked from loads, once per sweep.

Imported only there (see training.py): everything a trial needs, so each trial's
process starts in a fraction of a second instead of importing TensorFlow and
MLflow again, and logs its model as fast as the sweep's process would.
"""

import importlib

from happysad.search import training  # noqa: F401 - the trials' own code
from happysad.tracking import models

# What a trial's process would otherwise import when it logs its model (measured:
# about 2.5 s a trial); git is optional (MLflow uses it to find the commit).
for _name in (
    "mlflow.keras",
    "mlflow.pyfunc",
    "mlflow.models.display_utils",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.utils.environment",
    "mlflow.utils.requirements_utils",
    "sqlalchemy.dialects.sqlite",
    "mlflow.store.workspace_aware_mixin",
    "mlflow.tracing.export",
    "mlflow.tracing.processor",
    "alembic.command",
    "alembic.config",
    "netrc",
    "git",
):
    try:
        importlib.import_module(_name)
    except ImportError:
        pass

models.warm_up()
