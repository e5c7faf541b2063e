"""Paths and atomic writes, the results layout, the study lock, snapshots and read-only checks of a study's state. No Ray."""
