"""Warm migration: passes while the source runs, and the cutover (the pipeline calls this wing)."""
