"""The searchable CNN family: its arithmetic without TensorFlow (`architecture`), the
Keras layers built from a trial's drawn values (`hypermodel`), and pretrained
backbones fetched from MLflow and checked against the data (`transfer`)."""
