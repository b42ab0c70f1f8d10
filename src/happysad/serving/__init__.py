"""What travels inside every logged model: reading pictures (`images`), finding faces
(`faces`) and the python_function flavour that classifies them (`pyfunc`).

The three modules are copied into each model's `code/` folder (as `happysad_pyfunc`),
so `mlflow models serve` prepares pictures exactly as training did, with nothing of
happysad installed: they import each other relatively and nothing else of happysad.
Training's data loading uses the same code, so both sides can never drift apart.
"""
