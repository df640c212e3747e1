"""``python -m dashboard [--data DIR] [--port 8050] [--host 127.0.0.1] [--debug]``: local server."""
from __future__ import annotations

import argparse
import os
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m dashboard", description="Serve the AI-NERD dashboard.")
    p.add_argument("--data", help="folder of dataset files (default: $AINERD_DATA_DIR or ./data)")
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8050)))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    if args.data:
        os.environ["AINERD_DATA_DIR"] = args.data
    from .app import create_app
    from .config import ConfigError

    try:
        server = create_app()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"AI-NERD dashboard on http://{args.host}:{args.port}/", flush=True)
    server.run(host=args.host, port=args.port, debug=args.debug, threaded=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
