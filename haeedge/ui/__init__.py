"""Rendering for people and machines: sizes, tables, progress bars, JSON."""
