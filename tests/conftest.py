"""The suite compares runs of separate processes bit for bit, so the per-machine tuning they read
must stand for the whole session: a tuning measured while the machine was busy is kept, not
measured again when it turns quiet (edgeff/tuning.py, EDGEFF_TUNING=keep)."""

import os

os.environ.setdefault("EDGEFF_TUNING", "keep")
