"""haeedge: encrypted, deduplicated snapshot backups in OpenPGP format.

The public library API: open or create a repository, then run operations on it.
"""

__version__ = "0.1.0"
