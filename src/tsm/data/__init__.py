"""Data: the readers of the public datasets (``sources``), clip datasets, sampling, transforms, decoding, the
Lightning datamodule, and rebuilding a data config recorded in a checkpoint."""
