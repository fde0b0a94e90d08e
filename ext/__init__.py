"""Compiled (Cython) twins of the engine's byte-level pure-Python modules."""
