"""Backup: walk the sources, read and chunk in workers, pack, write the file list and the snapshot.

One module per concern: ``backup`` runs a backup (``Archiver``), ``walker`` walks the sources and
applies excludes, ``workers`` reads and chunks files in worker processes, ``metadata`` turns a stat
into a file-list entry, ``scanner`` estimates totals alongside, ``stream`` backs up stdin or a
command's output, ``summary`` is the counts a backup reports.
"""

from haeedge.archiver.backup import Archiver, BackupOptions, BackupResult, new_snapshot

__all__ = ["Archiver", "BackupOptions", "BackupResult", "new_snapshot"]
