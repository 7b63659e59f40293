"""The repository: the only package that knows the on-disk format (docs/format.md)."""
