"""What a command is told to do: the typed schemas of every config group (`schema`),
the checks a type cannot express (`validation`), composing `conf/` with Hydra
(`composition`), and what of the schema's spaces a sweep searches (`search_space`).

Imports nothing of TensorFlow, keras-tuner or MLflow: a bad override fails here, in
a fraction of a second, before anything heavy is loaded.
"""
