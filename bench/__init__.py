"""Benchmarks: `python -m bench.NAME`, each printing JSON.

numpy runs here on one OpenBLAS thread, as in the fleet (core/fleet.py) and the suite (Makefile),
unless the environment says otherwise. Its default of a thread per core changes the figures, not
only their speed: the Whisper encoder's features differed by up to 0.24 between one and two threads,
enough to move a short enrollment's mappings (bench.redub enrolled real-talk-2 with another
penalty for its phone mapping, and its opening r read 0.601 on one thread against 0.675 in the
previous session's run on two).
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
