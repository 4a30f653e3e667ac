"""``python -m manipseg.gan {train,fig4,compare}``: train the GAN blender / inpainter, draw the Fig. 4 grid,
compare a segmenter on copy-pastes vs G(K, M)."""
from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m manipseg.gan", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="(deprecated: manipseg train CONFIG) train G + D alone (blender or inpainter)")
    t.add_argument("config", help="GAN config, e.g. configs/gan/gan_blender.yaml or configs/gan/gan_inpainter.yaml")
    t.add_argument("--out", "-o", required=True, help="run directory (checkpoints, train.csv, snapshots/)")
    t.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    t.add_argument("--force", action="store_true", help="start over in an --out that already holds a run")
    t.add_argument("--steps", type=int, default=None, help="override train.steps")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    t.add_argument("--device", default="cpu")
    f = sub.add_parser("fig4", help="paper Fig. 4: held-out copy-pastes through the generator at several checkpoints")
    f.add_argument("run_dir", help="a blender run directory (with snapshots/)")
    f.add_argument("--out", required=True, help="PNG file to write")
    f.add_argument("--rows", type=int, default=4, help="samples (rows) in the grid")
    f.add_argument("--columns", type=int, default=5, help="checkpoints (columns) shown, evenly spaced")
    f.add_argument("--cell", type=int, default=160, help="cell side in pixels")
    c = sub.add_parser("compare", help="F1 of a segmenter on held-out copy-pastes M vs on G(K, M)")
    c.add_argument("--generator", required=True, help="blender .safetensors")
    c.add_argument("--model", required=True, help="segmenter .safetensors (manipseg train's model.safetensors)")
    c.add_argument("--sources", nargs="+", default=["natural/sun-hays"], help="held-out photo folders")
    c.add_argument("--n", type=int, default=48, help="number of copy-pastes")
    c.add_argument("--size", type=int, default=256)
    c.add_argument("--seed", type=int, default=777)
    c.add_argument("--composite-width", type=int, default=5, help="keep M outside K dilated by this (0: G's whole image)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from ..train.config import ConfigError

    if args.cmd == "train":
        from ..commands import train as train_command

        print(f"python -m manipseg.gan train is deprecated: use manipseg train {args.config} --out {args.out} "
              "(the config's recipe: gan)", file=sys.stderr)
        args.init = args.max_minutes = args.threads = None
        args.ddp = False
        return train_command.run(args, recipe="gan")
    try:
        if args.cmd == "fig4":
            from ..train.gan_fig4 import fig4

            path = fig4(args.run_dir, args.out, rows=args.rows, columns=args.columns, cell=args.cell)
            print(f"wrote {path}")
        else:
            from ..train.gan_evaluate import compare

            res = compare(args.generator, args.model, args.sources, n=args.n, size=args.size, seed=args.seed,
                          composite_width=args.composite_width)
            for k, v in res.items():
                print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
