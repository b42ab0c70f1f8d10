"""A search spread over workers on keras-tuner's own distributed mode: the chief
serves the oracle and watches the workers, which train and record the trials."""
