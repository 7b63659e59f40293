"""``haeedge mount``: snapshots as a read-only FUSE file system.

``view`` holds everything that does not need FUSE (layout, merged trees, path
lookup, attributes, range reads through ``blobcache``), so it is tested
without a kernel; ``fuse`` adapts it to the mfusepy binding.
"""
