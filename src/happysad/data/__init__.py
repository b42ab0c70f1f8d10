"""Images on disk -> checked, split, cached arrays -> tf.data pipelines.

`sources` lists what a folder, the FER2013 CSV or the synthetic set holds;
`synthetic` draws the embedded default data set; `dataset` decodes, splits, caches
and batches. Knows nothing of tuning or MLflow.
"""
