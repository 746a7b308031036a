"""What the batch and streaming jobs share about a trained model: the versioned model store,
the exact implicit-ALS fold-in, and top-N scoring. Pure numpy and files; no Spark session."""
