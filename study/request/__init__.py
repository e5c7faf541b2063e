"""Options become one validated request. Writes nothing; no Ray."""
