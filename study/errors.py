"""Errors the study service raises; the CLI turns them into one line and exit code 2."""

from __future__ import annotations


class StudyError(ValueError):
    """Bad input: a message that names the problem and what is allowed."""
