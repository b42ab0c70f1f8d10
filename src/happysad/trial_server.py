"""What the server that trial processes are forked from loads, once per sweep.

Imported only there (see training.py): everything a trial needs, so each trial's
process starts in a fraction of a second instead of importing TensorFlow and
MLflow again.
"""

from happysad import training

training.warm_up()
