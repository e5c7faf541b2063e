"""The only package that imports Ray: cluster, Tuner, Tune searchers and schedulers, the trainable adapter, the trials writer, progress and trackers."""
