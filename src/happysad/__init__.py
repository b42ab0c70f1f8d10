"""happysad: hyperparameter sweeps of happy/sad face CNNs.

Hydra composes the configuration, keras-tuner searches the CNN space, and MLflow
records every trial. Entry point: `python -m happysad.sweep`.

Importing the package is cheap: TensorFlow and MLflow load only when used.
"""

__version__ = "0.1.0"
