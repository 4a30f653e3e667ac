"""``python -m manipseg.train CONFIG.yaml ...`` (the form torchrun needs): same as ``manipseg train``."""
from __future__ import annotations

import sys

from ..cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
