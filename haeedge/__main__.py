"""``python -m haeedge``"""

from haeedge.cli import run

run()
