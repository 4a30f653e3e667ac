"""Training configuration: YAML/TOML/JSON files with ``extends:``, validated against a schema of defaults.

A config file is a nested mapping whose sections and keys must appear in :data:`DEFAULTS`; unknown keys
raise :class:`ConfigError` naming the file, the dotted key and the closest known key. ``extends: FILE``
(a path relative to the file, or a list of them) merges a base config underneath (the ablation configs
in ``configs/`` extend ``configs/segment/base.yaml``). Command-line overrides use dotted keys
(``--set train.steps=200``) and are parsed as YAML scalars.

String values that name files may use ``$VARIABLES`` and ``~``; relative paths in ``data`` and
``validation`` are resolved against ``data.root`` (default: :func:`manipseg.paths.data_root`).
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..names import GENERATION_KINDS, did_you_mean
from ..paths import data_root

#: the generation kinds the synthetic engine knows (``splice`` is the paper's copy-paste CP).
GENERATED_KINDS = GENERATION_KINDS  # the generator's kinds (manipseg.names)

#: every accepted key with its default value; ``None`` means "not set".
DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {
        "arch": "compact",            # "gsr-vgg16" (the paper's DeepLab VGG-16) or "compact"
        "boundary_branch": True,      # GS-Net's boundary head (off = plain DeepLab segmentation)
        "guided_residual": False,     # AdapGRnet guided-residual stream beside RGB
        "dropout": 0.5,
        "options": {},                # further architecture options (e.g. width for "compact")
        "init": None,                 # a weights .safetensors to start from (tensors of matching name and shape)
    },
    "data": {
        "root": None,                 # base of relative paths; default $MANIPSEG_DATA or ../shared/data
        "sources": ["natural/coco/images", "natural/bsds500/images"],  # authentic photo folders
        "kinds": {"splice": 1.0},     # generated kinds and their sampling weights
        "size": 256,                  # training crop side in pixels
        "generate": {},               # extra options passed to the generation engine
        "real": None,                 # real training forgeries: {path, format, weight}
        "generator": None,            # G(M) hook: "module:callable" (see manipseg.train.data.load_generator)
        "generator_args": {},         # keyword arguments when the hook names a factory/class
        "generated_fraction": 0.0,    # fraction of copy-pasted (splice) samples replaced by G(M)
    },
    "train": {
        "steps": 2000,
        "batch_size": 4,
        "lr": 1.0e-4,
        "weight_decay": 5.0e-5,
        "schedule": "constant",       # "constant" (the paper) or "cosine" (decay to 5% over the run)
        "warmup": 0,                  # linear warm-up steps
        "grad_clip": None,            # max gradient norm, None = off
        "flip": True,                 # random horizontal + vertical flips (the paper's only augmentation)
        "bf16": True,                 # bf16 autocast when the CPU supports it (fp32 otherwise)
        "channels_last": True,
        "num_workers": 0,
        "seed": 0,
        "log_every": 10,
    },
    "loss": {
        "seg_weight": 1.0,
        "boundary_weight": 1.0,
        "boundary_class_weights": [0.3, 0.7],  # background / boundary, as GSRNet
        "seg_class_weights": None,             # None = unweighted two-class softmax cross-entropy
    },
    "refine": {
        "enabled": False,
        "passes": 1,                  # refinement passes per step (each re-uses the previous prediction)
        "threshold": 0.5,             # boundary probability above which a pixel is replaced by T
        "restrict_to_mask": True,     # only replace predicted-boundary pixels within K's dilated region
        "weight": 1.0,                # loss weight of each refined pass
        "boundary_width": 5,          # width of the boundary recomputed from K'
    },
    "validation": {
        "every": 500,                 # steps; 0 = only at the end
        "generated": 64,              # held-out generated images (0 = none)
        "seed": 1_000_003,            # generation seed of the held-out set (differs from training)
        "sources": ["natural/sun-hays", "natural/imagenet-sample"],  # photos NOT used for training
        "kinds": None,                # None = the training kinds
        "size": None,                 # side of the held-out generated images; None = data.size
        "folder": None,               # a real forgery dataset to validate on (path)
        "format": "auto",             # its layout, for manipseg.eval.datasets.open_dataset
        "max_images": 50,             # cap on the folder's images per validation
        "max_side": 1024,             # folder images are downscaled to this longest side
    },
    "gan": {                          # GSR-Net's blender G(K, M) + D trained jointly (manipseg.train.gan_joint)
        "enabled": None,              # None = on when data.generated_fraction > 0 and data.generator is unset
        "generator": {"width": 16, "depth": 5, "max_width": 128, "identity_init": True},
        "discriminator": {"width": 32},
        "weights": {"grad": 1.0, "edge": 2.0, "adv": 5.0},  # λ of Eq. 7
        "edge_width": 5,
        "pixel_scale": 1.0,           # factor on Eq. 7's L1 terms (1: pixels in [-1, 1])
        "lr": 1.0e-4,
        "betas": [0.5, 0.999],
        "init": None,                 # a pre-trained blender .safetensors to start G from
        "composite_width": 5,         # G(K, M) kept inside K dilated by this; M elsewhere (0 = G's whole image)
    },
    "distill": {                      # knowledge distillation from a trained teacher network (off when unset)
        "teacher": None,              # a segmenter .safetensors (e.g. src/manipseg/weights/gsr-vgg16.safetensors)
        "weight": 1.0,                # factor on the distillation term, added to the ground-truth losses
        "temperature": 1.0,           # softmax temperature of both maps (the term is scaled by T^2)
    },
    "checkpoint": {
        "every": 500,                 # steps; the final step is always saved
        "keep": 3,                    # most recent checkpoints kept
        "export_every": 0,            # also write snapshots/model_<step>.safetensors every N steps (0 = off)
    },
    "log": {
        "tensorboard": False,         # write TensorBoard events if the package is installed
        "progress": True,
    },
}

#: keys whose value is a free-form mapping (not checked key by key).
FREE_FORM = {("model", "options"), ("data", "kinds"), ("data", "generate"), ("data", "generator_args"), ("data", "real"),
             ("gan", "generator"), ("gan", "discriminator"), ("gan", "weights")}
REAL_KEYS = {"path": None, "format": "auto", "weight": 0.5}


class ConfigError(ValueError):
    """A training config that cannot be used; the message names the file and key."""


#: what ``manipseg train CONFIG`` trains, by the config's top-level ``recipe:`` key (default: segment)
RECIPES = ("segment", "gan", "faces")


def recipe_of(raw: Mapping[str, Any], origin: str = "<config>") -> str:
    """The recipe a config names (``recipe: segment | gan | faces``; none: ``segment``)."""
    name = raw.get("recipe", "segment")
    if name not in RECIPES:
        raise ConfigError(f"{origin}: unknown recipe {name!r}.{_closest(str(name), list(RECIPES))} "
                          f"Recipes: {', '.join(RECIPES)}.")
    return name


def without_recipe(raw: Mapping[str, Any], expected: str, origin: str = "<config>") -> dict[str, Any]:
    """``raw`` without its ``recipe:`` key, which must name ``expected`` (the reader of this kind of config)."""
    name = recipe_of(raw, origin) if "recipe" in raw else expected
    if name != expected:
        raise ConfigError(f"{origin}: a config of recipe {name!r}, read as one of recipe {expected!r}; "
                          f"train it with: manipseg train {origin}")
    return {k: v for k, v in raw.items() if k != "recipe"}


def _closest(word: str, options: list[str]) -> str:
    return did_you_mean(word, options, cutoff=0.5)


def read_file(path: str | os.PathLike) -> dict[str, Any]:
    """Parse one YAML/TOML/JSON config file (without resolving ``extends``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            import tomllib  # Python 3.11+ only: the .toml configs need it, the YAML ones do not

            data = tomllib.loads(text)
        else:
            data = yaml.safe_load(text)
    except Exception as exc:  # the parsers raise several unrelated exception types
        raise ConfigError(f"{path}: cannot parse config: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {type(data).__name__}")
    return data


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base``; nested mappings merge, anything else replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_raw(path: str | os.PathLike, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file with its ``extends`` chain merged (later files win)."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: circular 'extends' chain: {' -> '.join(str(p) for p in _seen + (path,))}")
    data = read_file(path)
    parents = data.pop("extends", None) or []
    if isinstance(parents, str):
        parents = [parents]
    merged: dict[str, Any] = {}
    for parent in parents:
        merged = deep_merge(merged, load_raw(path.parent / os.path.expanduser(str(parent)), _seen + (path,)))
    return deep_merge(merged, data)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"train.steps=200"`` -> (["train", "steps"], 200)."""

    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like section.key=value")
    return key.strip().split("."), yaml.safe_load(value)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    for item in overrides:
        keys, value = parse_override(item)
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {k!r} is not a section")
        node[keys[-1]] = value
    return raw


def _check_type(where: str, value: Any, default: Any) -> None:
    if default is None or value is None:
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float):
            ok = value.is_integer()
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, list):
        ok = isinstance(value, list)
    elif isinstance(default, dict):
        ok = isinstance(value, dict)
    else:
        ok = True
    if not ok:
        raise ConfigError(f"{where}: expected {type(default).__name__} like {default!r}, got {value!r}")


def validate(raw: Mapping[str, Any], origin: str = "<config>") -> dict[str, Any]:
    """Fill defaults and check every key, type and cross-constraint. Returns the full config."""
    cfg = copy.deepcopy(DEFAULTS)
    for section, values in without_recipe(raw, "segment", origin).items():
        if section not in DEFAULTS:
            raise ConfigError(f"{origin}: unknown section {section!r}.{_closest(section, list(DEFAULTS))} "
                              f"Sections: {', '.join(DEFAULTS)}.")
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise ConfigError(f"{origin}: section {section!r} must be a mapping, got {values!r}")
        for key, value in values.items():
            if key not in DEFAULTS[section]:
                raise ConfigError(f"{origin}: unknown key {section}.{key}.{_closest(key, list(DEFAULTS[section]))} "
                                  f"Keys of {section!r}: {', '.join(DEFAULTS[section])}.")
            where = f"{origin}: {section}.{key}"
            if (section, key) not in FREE_FORM:
                _check_type(where, value, DEFAULTS[section][key])
            if isinstance(value, float) and isinstance(DEFAULTS[section][key], int) \
                    and not isinstance(DEFAULTS[section][key], bool):
                value = int(value)
            cfg[section][key] = copy.deepcopy(value)
    _cross_check(cfg, origin)
    return cfg


def _positive(cfg: dict, origin: str, section: str, key: str, allow_zero: bool = False) -> None:
    v = cfg[section][key]
    if v is None or v < 0 or (v == 0 and not allow_zero):
        raise ConfigError(f"{origin}: {section}.{key} must be {'>= 0' if allow_zero else '> 0'}, got {v!r}")


def _cross_check(cfg: dict[str, Any], origin: str) -> None:
    m, d, t, lo, r, v = (cfg[k] for k in ("model", "data", "train", "loss", "refine", "validation"))
    if m["arch"] not in ("gsr-vgg16", "compact"):
        raise ConfigError(f"{origin}: model.arch must be 'gsr-vgg16' or 'compact', got {m['arch']!r}."
                          f"{_closest(str(m['arch']), ['gsr-vgg16', 'compact'])}")
    if not 0.0 <= float(m["dropout"]) < 1.0:
        raise ConfigError(f"{origin}: model.dropout must be in [0, 1), got {m['dropout']}")
    kinds = d["kinds"] or {}
    if isinstance(kinds, list):
        kinds = {k: 1.0 for k in kinds}
    if not isinstance(kinds, dict):
        raise ConfigError(f"{origin}: data.kinds must map kind -> weight, e.g. {{splice: 1.0}}, got {kinds!r}")
    for kind, weight in kinds.items():
        if kind not in GENERATED_KINDS:
            raise ConfigError(f"{origin}: data.kinds: unknown kind {kind!r}.{_closest(str(kind), list(GENERATED_KINDS))}"
                              f" Kinds: {', '.join(GENERATED_KINDS)}.")
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight < 0:
            raise ConfigError(f"{origin}: data.kinds.{kind}: weight must be a number >= 0, got {weight!r}")
    d["kinds"] = {k: float(w) for k, w in kinds.items() if w > 0}
    if d["real"] is not None:
        if not isinstance(d["real"], dict):
            raise ConfigError(f"{origin}: data.real must be a mapping {{path, format, weight}}, got {d['real']!r}")
        for key in d["real"]:
            if key not in REAL_KEYS:
                raise ConfigError(f"{origin}: unknown key data.real.{key}.{_closest(key, list(REAL_KEYS))} "
                                  f"Keys: {', '.join(REAL_KEYS)}.")
        d["real"] = {**REAL_KEYS, **d["real"]}
        w = d["real"]["weight"]
        if not isinstance(w, (int, float)) or not 0.0 <= w <= 1.0:
            raise ConfigError(f"{origin}: data.real.weight is the fraction of samples drawn from real forgeries, "
                              f"in [0, 1]; got {w!r}")
        if not d["real"]["path"]:
            raise ConfigError(f"{origin}: data.real needs a path to a forgery dataset (e.g. CASIA 2.0): "
                              "set data.real.path, or --set data.real.path=/path/to/CASIA2")
    real_weight = d["real"]["weight"] if d["real"] else 0.0
    if real_weight < 1.0 and not d["kinds"]:
        raise ConfigError(f"{origin}: no training data: data.kinds is empty and data.real does not supply "
                          "every sample (weight 1.0)")
    if real_weight < 1.0 and not d["sources"]:
        raise ConfigError(f"{origin}: data.sources must list at least one folder of authentic photos")
    if not 0.0 <= float(d["generated_fraction"]) <= 1.0:
        raise ConfigError(f"{origin}: data.generated_fraction must be in [0, 1], got {d['generated_fraction']}")
    g = cfg["gan"]
    if g["enabled"] is None:
        g["enabled"] = bool(d["generated_fraction"] > 0 and not d["generator"])
    if g["enabled"] and d["generator"]:
        raise ConfigError(f"{origin}: gan.enabled trains G jointly, but data.generator also names a fixed G(M); "
                          "keep one (a pre-trained blender can start the joint G: gan.init: FILE.safetensors)")
    if g["enabled"] and not d["generated_fraction"] > 0:
        raise ConfigError(f"{origin}: gan.enabled trains G(K, M) but data.generated_fraction is 0, so the segmenter "
                          "would never see G's images; set data.generated_fraction (e.g. 0.5)")
    if d["generated_fraction"] > 0 and not d["generator"] and not g["enabled"]:
        raise ConfigError(
            f"{origin}: data.generated_fraction={d['generated_fraction']} needs a generator G(M) (paper §3.1): "
            "leave gan.enabled unset/true to train the GAN blender jointly, or set data.generator "
            "(e.g. manipseg.gan.model:load_blender with data.generator_args: {path: FILE.safetensors})")
    if d["generated_fraction"] > 0 and "splice" not in d["kinds"]:
        raise ConfigError(f"{origin}: data.generated_fraction applies G to copy-pasted samples, so data.kinds "
                          "must include 'splice'")
    if int(d["size"]) < 32 or int(d["size"]) % 16:
        raise ConfigError(f"{origin}: data.size must be a multiple of 16 and >= 32, got {d['size']}")
    for key in ("steps", "batch_size", "lr", "log_every"):
        _positive(cfg, origin, "train", key)
    for key in ("weight_decay", "warmup", "num_workers"):
        _positive(cfg, origin, "train", key, allow_zero=True)
    if t["schedule"] not in ("constant", "cosine"):
        raise ConfigError(f"{origin}: train.schedule must be 'constant' or 'cosine', got {t['schedule']!r}")
    for key in ("boundary_class_weights", "seg_class_weights"):
        w = lo[key]
        if w is not None and (len(w) != 2 or any(not isinstance(x, (int, float)) or x < 0 for x in w)):
            raise ConfigError(f"{origin}: loss.{key} must be two non-negative numbers, got {w!r}")
    _positive(cfg, origin, "refine", "passes")
    if r["enabled"]:
        if not m["boundary_branch"]:
            raise ConfigError(f"{origin}: refine.enabled needs the boundary prediction P (Eq. 8), so "
                              "model.boundary_branch must be true")
        if not 0.0 < r["threshold"] < 1.0:
            raise ConfigError(f"{origin}: refine.threshold must be in (0, 1), got {r['threshold']}")
        if real_weight >= 1.0:
            raise ConfigError(f"{origin}: refinement needs the authentic target T, which only generated samples "
                              "have; real forgeries supply every sample here (data.real.weight = 1)")
    if v["size"] is not None and (int(v["size"]) < 32 or int(v["size"]) % 16):
        raise ConfigError(f"{origin}: validation.size must be a multiple of 16 and >= 32, got {v['size']}")
    for key in ("every", "generated", "max_images", "max_side"):
        _positive(cfg, origin, "validation", key, allow_zero=True)
    k = cfg["distill"]
    if k["teacher"] is not None:
        _positive(cfg, origin, "distill", "weight")
        _positive(cfg, origin, "distill", "temperature")
    _positive(cfg, origin, "checkpoint", "every", allow_zero=True)
    _positive(cfg, origin, "checkpoint", "keep")
    if v["kinds"] is not None:
        bad = [k for k in v["kinds"] if k not in GENERATED_KINDS]
        if bad:
            raise ConfigError(f"{origin}: validation.kinds: unknown kind {bad[0]!r}."
                              f"{_closest(str(bad[0]), list(GENERATED_KINDS))}")


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read, merge (``extends``), override and validate a training config file."""
    raw = apply_overrides(load_raw(path), overrides or [])
    return validate(raw, origin=str(path))


def resolve_path(value: str | os.PathLike, root: str | os.PathLike | None) -> Path:
    """Expand ``$VARS`` and ``~``; a relative path is taken under ``root`` (the data root)."""

    expanded = os.path.expandvars(str(value))
    if "$" in expanded:
        raise ConfigError(f"path {value!r}: environment variable not set (export it, or give the path directly "
                          "with --set)")
    p = Path(os.path.expanduser(expanded))
    if p.is_absolute():
        return p
    return data_root(root) / p
