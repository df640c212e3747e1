"""Command line: ``ainerd <command> ...`` (the installed console script) = ``python -m ainerd_core <command> ...``.

Each command lives in its own module, which provides ``configure_parser(parser)`` and
``run(args) -> int``; only the chosen command's module is imported (torch and umap are slow
to import). Errors a user can fix (:class:`~ainerd_core.errors.AinerdError`, missing files)
print one line ``error: <file>: <problem>`` and exit with status 2; ``--debug`` shows the
traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("ainerd_core.simulate", "simulate a rheo-XPCS experiment with ground truth"),
    "ingest": ("ainerd_core.ingest", "convert beamline files, stacks or published data to a dataset"),
    "info": ("ainerd_core.cli", "summarise a dataset file"),
    "train": ("ainerd_core.train", "train the autoencoder on a dataset"),
    "encode": ("ainerd_core.model", "encode a dataset's maps into latents (prints a summary)"),
    "latent-sweep": ("ainerd_core.diagnostics", "test MSE vs latent size, within a time budget"),
    "precompute": ("ainerd_core.precompute", "latents, clusters, UMAP, similarity -> /results"),
    "benchmark-retrieval": ("ainerd_core.retrieval", "precision@k of latent vs raw-pixel neighbours"),
    "study": ("ainerd_core.study_cli", "create and manage blind expert-evaluation studies"),
    "simulate-randomized": ("ainerd_core.randomsim", "domain-randomised maps with truth (training ranges or held-out settings)"),
    "train-randomized": ("ainerd_core.ssl", "train the autoencoder on domain-randomised maps (reconstruction and/or VICReg / InfoNCE)"),
    "equalise-latent": ("ainerd_core.latent_scale", "rescale a checkpoint's latent dimensions to unit spread (same reconstructions)"),
    "watch": ("ainerd_core.watch", "live mode: append the beamline's new result files to a dataset as they arrive"),
}


# the 'info' command lives here because it is three lines
def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="dataset file (.h5)")


def run(args) -> int:
    from .dataset import describe

    print(describe(args.dataset))
    return 0


def _prog() -> str:
    """How the user called us: ``ainerd`` (the installed console script) or ``python -m ainerd_core``."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return name if name.startswith("ainerd") and not name.endswith(".py") else "python -m ainerd_core"


def _top_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=_prog(),
                                description="AI-NERD: rheo-XPCS two-time correlation maps -> understanding.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in COMMANDS:
        parser = _top_parser()
        if "--version" in argv:
            from . import __version__

            print(__version__)
            return 0
        if command is None:
            parser.print_help()
            return 0 if ("-h" in argv or "--help" in argv) else 2
        parser.error(f"unknown command {command!r}")
    argv.remove(command)
    module = importlib.import_module(COMMANDS[command][0])
    parser = argparse.ArgumentParser(prog=f"{_prog()} {command}", description=COMMANDS[command][1])
    parser.add_argument("--debug", action="store_true", default=debug, help="show tracebacks")
    module.configure_parser(parser)
    args = parser.parse_args(argv)
    args.debug = args.debug or debug
    if args.debug:
        return int(module.run(args) or 0)
    from .errors import AinerdError

    try:
        return int(module.run(args) or 0)
    except AinerdError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        print(f"error: {exc.filename}: {exc.strerror}", file=sys.stderr)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
    except MemoryError:
        print("error: out of memory", file=sys.stderr)
    return 2
