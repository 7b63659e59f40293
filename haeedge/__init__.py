"""haeedge: encrypted, deduplicated snapshot backups in OpenPGP format.

The supported interface is the ``haeedge`` command and its ``--json`` output
(docs/json.md), and the repository format (docs/format.md). The modules here
are the command's implementation, laid out in docs/architecture.md; they are
not a stable library API and may change between versions.
"""

__version__ = "0.1.0"
