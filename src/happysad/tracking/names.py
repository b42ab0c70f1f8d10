"""The names happysad writes into MLflow, each defined once: tags, roles, run
statuses. Importing this module imports nothing of MLflow, so any module can read
what a run's tags mean."""

from __future__ import annotations

PREFIX = "happysad."  # every tag this project sets starts with it

# On sweeps and trials.
ROLE = PREFIX + "role"  # 'sweep' or 'trial'
SWEEP = PREFIX + "sweep"  # the sweep's name
TRIAL_ID = PREFIX + "trial_id"  # keras-tuner's trial id
DATA_DIGEST = PREFIX + "data_digest"  # images.digest: same digest, same images
OVERRIDES = PREFIX + "overrides"  # the command line's overrides
RESUMES = PREFIX + "resumes"  # how many times a sweep was continued
MODEL_URI = PREFIX + "model_uri"  # the trial's logged model
FAILURE = PREFIX + "failure"  # why a trial failed or was stopped
BUDGET = PREFIX + "budget"  # the time budget stopped this trial, or this sweep
PRUNED = PREFIX + "pruned"  # pruning stopped this trial: the epoch, the rule, the figures
SEED = PREFIX + "seed"
DATA_SEED = PREFIX + "data_seed"
DETERMINISTIC = PREFIX + "deterministic"
MULTIRUN = PREFIX + "multirun"  # the folder of a Hydra `-m` run
MULTIRUN_JOB = PREFIX + "multirun_job"
WORKER = PREFIX + "worker"  # the keras-tuner id of the worker that ran a trial
DEADLINE = PREFIX + "deadline"  # when a distributed sweep's time budget ends (time.time())
VERSION = PREFIX + "version."  # + a package's name: its version

# On a sweep once it ends: its best trial.
BEST_TRIAL_ID = PREFIX + "best_trial_id"
BEST_RUN_ID = PREFIX + "best_run_id"
BEST_MODEL_URI = PREFIX + "best_model_uri"
BEST = PREFIX + "best."  # + a hyperparameter's name: the best trial's value

# On a registered model version.
SOURCE_RUN_ID = PREFIX + "source_run_id"
TEST = PREFIX + "test_"  # + a metric's name: the version's test metric when registered

ROLE_SWEEP, ROLE_TRIAL, ROLE_BACKBONE = "sweep", "trial", "backbone"
ROLE_ENSEMBLE = "ensemble"  # promote.ensemble's model: a child run of its sweep's run
ENSEMBLE_MEMBERS = PREFIX + "ensemble_members"  # JSON: each member's run id, trial, weight

# A pretraining run's backbone, and a trial that started from one (its lineage).
BACKBONE_URI = PREFIX + "backbone_uri"
BACKBONE_RUN_ID = PREFIX + "backbone_run_id"
BACKBONE_DATA_DIGEST = PREFIX + "backbone_data_digest"

# MLflow's own names this project sets or reads.
PARENT_RUN_ID = "mlflow.parentRunId"
NOTE = "mlflow.note.content"  # the run's description in the MLflow UI
GIT_COMMIT = "mlflow.source.git.commit"

# Run statuses, as MLflow spells them.
RUNNING, FINISHED, FAILED, KILLED = "RUNNING", "FINISHED", "FAILED", "KILLED"

# The aliases promote moves in the model registry.
CHAMPION, PREVIOUS = "champion", "previous"
