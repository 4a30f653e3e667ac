"""``manipseg generate``: write a synthetic forgery dataset (images, masks, boundaries, authentic targets)."""
from __future__ import annotations

import argparse

HELP = "generate synthetic forgeries with pixel-exact masks from folders of authentic photos"

KIND_NAMES = ("splice", "copymove", "poisson", "removal", "enhance", "sbi", "composite", "authentic", "gan", "inpaint-gan")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sources", nargs="+", required=True, metavar="DIR",
                   help="folders of authentic images (searched recursively; COCO / BSDS annotations beside them are used)")
    p.add_argument("--n", type=int, required=True, help="number of samples to generate")
    p.add_argument("--kinds", default="splice,copymove,poisson,removal,enhance,sbi",
                   help=f"comma-separated kinds to mix, from: {','.join(KIND_NAMES)} (default: %(default)s)")
    p.add_argument("--size", type=int, default=256, help="side of the square samples in pixels (default 256)")
    p.add_argument("--out", required=True, help="output folder (created; existing files with the same names are replaced)")
    p.add_argument("--seed", type=int, default=0, help="run seed: the same seed and sources give the same bytes")
    from .common import add_pool_arguments

    add_pool_arguments(p)
    p.add_argument("--config", default=None, help="YAML/JSON file of generator settings (see manipseg.generate.GenConfig)")
    p.add_argument("--no-post", action="store_true", help="switch the post-processing chain (JPEG, resize, blur, noise) off")
    p.add_argument("--save-sources", action="store_true", help="also write the aligned source images S (sources/)")
    p.add_argument("--generator", default=None, metavar="FILE",
                   help="trained GAN blender (.safetensors) for the 'gan' kind (default: the shipped one, if any; "
                        "train your own with manipseg train configs/gan/gan_blender.yaml)")
    p.add_argument("--inpainter", default=None, metavar="FILE",
                   help="trained GAN inpainter (.safetensors) for the 'inpaint-gan' kind")
    p.add_argument("--preview", action="store_true", help="write preview.png: image / mask / boundary / target of the first samples")
    p.add_argument("--preview-count", type=int, default=16, help="rows in the preview (default 16)")


def run(args: argparse.Namespace) -> int:
    import logging
    import sys
    from pathlib import Path

    import yaml
    from tqdm import tqdm

    from ..generate.config import GenConfig
    from ..generate.pool import ImagePool, SourceError
    from ..generate.runner import GenerateSpec, iter_pool, write_dataset, write_preview
    from .common import pool_or_none

    log = logging.getLogger("manipseg.generate")
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KIND_NAMES]
    if bad or not kinds:
        print(f"error: unknown kind(s) {', '.join(bad) or '(none given)'}; choose from {', '.join(KIND_NAMES)}", file=sys.stderr)
        return 2
    if args.n <= 0 or args.size < 32 or args.seed < 0:
        print("error: --n must be positive, --size at least 32, --seed non-negative", file=sys.stderr)
        return 2
    config: dict = {}
    if args.config:
        cp = Path(args.config)
        try:
            config = yaml.safe_load(cp.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            print(f"error: {cp}: cannot read generator config: {exc}", file=sys.stderr)
            return 2
        if not isinstance(config, dict):
            print(f"error: {cp}: generator config must be a mapping of settings", file=sys.stderr)
            return 2
    if args.no_post:
        config.setdefault("post", {})["enabled"] = False
    for kind, flag, path, role in (("gan", "--generator", args.generator, "blender"),
                                   ("inpaint-gan", "--inpainter", args.inpainter, "inpainter")):
        if kind in kinds:
            if not path:
                from ..gan.model import bundled_weights

                path = bundled_weights(role)
                if path is not None:
                    setattr(args, flag[2:], str(path))
            if not path:
                print(f"error: kind {kind!r} needs {flag} FILE.safetensors (a trained {role}; see python -m manipseg.gan "
                      "train --help)", file=sys.stderr)
                return 2
            from ..gan.model import GeneratorWeightsError, load_generator_file

            try:
                load_generator_file(path, role)
            except GeneratorWeightsError as exc:
                print(f"error: {flag}: {exc}", file=sys.stderr)
                return 2
    try:
        GenConfig.from_dict(config)
        pool = ImagePool(args.sources, size=args.size)  # validates the folders before any work starts
    except (SourceError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from .common import out_dir_or_none

    if out_dir_or_none(args.out) is None:  # the last check before any work
        return 2
    log.info("%d authentic images in %d folder(s)", len(pool), len(args.sources))
    spec = GenerateSpec(sources=[str(Path(s)) for s in args.sources], kinds=kinds, n=args.n, size=args.size,
                        seed=args.seed, config=config, save_sources=args.save_sources,
                        generator=args.generator, inpainter=args.inpainter)
    pool_spec = pool_or_none(args)
    if pool_spec is None:
        return 2
    results = iter_pool(spec, pool_spec)
    from ..parallel import PoolError

    try:
        with tqdm(total=args.n, unit="sample", desc="generate") as bar:
            records, failures = write_dataset(spec, args.out, results, progress=bar.update)
    except PoolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = Path(args.out)
    print(f"wrote {len(records)} samples to {out} (manifest.jsonl)")
    if args.preview:
        path = write_preview(out, records, count=args.preview_count)
        if path:
            print(f"preview: {path}")
    if failures:
        print(f"{len(failures)} sample(s) failed and were skipped:", file=sys.stderr)
        for i, msg in failures[:20]:
            print(f"  {i}: {msg}", file=sys.stderr)
        return 1
    return 0
