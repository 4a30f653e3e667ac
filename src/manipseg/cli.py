"""Command-line entry point: ``manipseg <command> ...``.

Each command lives in ``manipseg/commands/<name>.py`` with ``HELP``, ``configure(parser)`` and
``run(args) -> int``; those modules import heavy libraries only inside ``run``.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__

#: command name -> module; the order is the order shown in ``manipseg --help``.
COMMANDS = {
    "predict": "manipseg.commands.predict",
    "models": "manipseg.commands.models",
    "evaluate": "manipseg.commands.evaluate",
    "calibrate": "manipseg.commands.calibrate",
    "generate": "manipseg.commands.generate",
    "train": "manipseg.commands.train",
    "faces": "manipseg.commands.faces",
    "serve": "manipseg.commands.serve",
}


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = argparse.ArgumentParser(
        prog="manipseg",
        description="Find where a photo was manipulated: heatmap, mask and score.",
    )
    parser.add_argument("--version", action="version", version=f"manipseg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = {}
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.configure(p)
        modules[name] = module
    return parser, modules


def _sigterm_as_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    import os
    import signal

    parser, modules = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.command:
        parser.print_help()
        return 2
    # SIGTERM (kill, a job scheduler) ends a command as Ctrl-C does: each command's own interrupt handling
    # (a checkpoint, a resumable batch) runs, and the user gets one line instead of a traceback
    import threading

    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt) if in_main else None
    try:
        code = int(modules[args.command].run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below, not at interpreter exit
        return code
    except KeyboardInterrupt:
        print(f"manipseg {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of our output went away (``manipseg models | head``): stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
