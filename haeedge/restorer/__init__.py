"""Restore, pack-centric: each pack is fetched once per batch and its blobs written to every file
that needs them, never outside the target.

One module per concern: ``restore`` runs a restore (``Restorer``), ``existing`` decides about
entries already in the target, ``delete`` removes what the snapshot does not hold (``--delete``),
``verify`` re-reads what was written (``--verify``); ``haeedge.fs`` opens paths of any length
without following symlinks.
"""

from haeedge.restorer.restore import RestoreOptions, Restorer, RestoreResult

__all__ = ["RestoreOptions", "RestoreResult", "Restorer"]
