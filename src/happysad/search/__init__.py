"""Running a search: keras-tuner's tuner with every trial recorded (`tuning`), each
trial trained in its own process (`training`, forked from `trial_server`),
TensorFlow's start (`startup`), the time budget (`budget`), continuing a named sweep
(`resume`) and the checks before the first trial (`preflight`). `distribute` spreads
a search over workers."""
