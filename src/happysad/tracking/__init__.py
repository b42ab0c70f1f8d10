"""Everything that talks to MLflow; no other happysad module imports it.

- `names`: the tags, statuses and aliases happysad writes, each defined once
  (imports nothing of MLflow).
- `store`: which store a command uses (one rule for every command), and reading
  from it: experiments, sweeps, trials, artifacts, loading models.
- `runs`: writing a sweep's parent run and its trials' nested runs.
- `models`: how a trained model is logged (Keras flavour plus happysad's images-in
  python_function flavour) and what it requires.
- `registry`: registered versions and the `champion` / `previous` aliases.

Every call takes its store explicitly (a `Store`: URI and client); nothing depends
on MLflow's global active run or tracking URI, so the same calls work from the
sweep's process, a trial's process, a worker on another machine or a test.
(The model's own serving code, `happysad/serving/`, travels inside saved models
and is loaded by MLflow; it is the one other module that meets MLflow.)
"""
