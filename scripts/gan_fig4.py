"""Paper Fig. 4 for a GAN blender run: ``python scripts/gan_fig4.py RUN_DIR --out fig4.png``.

Same as ``python -m manipseg.gan fig4 RUN_DIR --out fig4.png`` (see manipseg.train.gan_fig4)."""
import sys

from manipseg.gan.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["fig4", *sys.argv[1:]]))
