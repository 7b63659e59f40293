"""Repository operations besides backup, restore and mount: one module per operation.

check (verify), repair, prune and forget (with the pure retention policy), copy,
key and trust management, rewrite, and the cold-storage reads that restore,
dump and verify request first. Each takes an open repository and returns a
result object; the CLI renders it. Operations import ``repo/`` and below,
never ``cli/``.
"""
