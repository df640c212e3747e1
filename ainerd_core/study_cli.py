"""``python -m ainerd_core study ...``: create and manage blind expert-evaluation studies
(the commands are listed in :mod:`ainerd_core.studies`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from .errors import InputError
from .studies import DEFAULT_N, StudyStore, expert_link, load_target_file


# ====================================================================== CLI
def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", help="database URL (default $AINERD_DATABASE_URL or sqlite:///instance/ainerd.db)")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("create", help="create a study and print one expert link per line")
    p.add_argument("dataset", help="dataset file (.h5) with C2 maps and /results/latent")
    p.add_argument("--target", required=True, help="map index in the dataset, or a .npy file (resampled to 256x256)")
    p.add_argument("--n", type=int, default=DEFAULT_N, help="neighbours per method (default 300)")
    p.add_argument("--experts", required=True, help='comma-separated names, e.g. "Alice,Bob"')
    p.add_argument("--methods", default="latent,raw",
                   help="comma-separated, from latent, raw, smoothed (smoothed pixels, the stronger baseline); "
                        "default latent,raw (the paper's protocol)")
    p.add_argument("--expires-days", type=float, default=None, help="links expire after N days")
    p.add_argument("--base-url", default="http://127.0.0.1:8050", help="address experts open")
    p.add_argument("--title", default=None)
    p.add_argument("--model", default=None, help="checkpoint to encode an uploaded target (latent method)")
    p.add_argument("--db", dest="db_sub", default=None, help=argparse.SUPPRESS)
    sub.add_parser("list", help="studies with progress per expert").add_argument("--db", dest="db_sub", default=None,
                                                                               help=argparse.SUPPRESS)
    p = sub.add_parser("close", help="close a study (links stop working)")
    p.add_argument("study_id", type=int)
    p.add_argument("--db", dest="db_sub", default=None, help=argparse.SUPPRESS)
    p = sub.add_parser("revoke", help="revoke one expert link (by token or expert id)")
    p.add_argument("token_or_expert_id")
    p.add_argument("--db", dest="db_sub", default=None, help=argparse.SUPPRESS)
    p = sub.add_parser("add-expert", help="add an expert to an open study; prints the link")
    p.add_argument("study_id", type=int)
    p.add_argument("name")
    p.add_argument("--expires-days", type=float, default=None)
    p.add_argument("--base-url", default="http://127.0.0.1:8050")
    p.add_argument("--db", dest="db_sub", default=None, help=argparse.SUPPRESS)
    p = sub.add_parser("results", help="write accuracy, statistics and the full rating log (CSV/JSON)")
    p.add_argument("study_id", type=int)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--window", type=int, default=21, help="smoothing window in ranks (odd, default 21)")
    p.add_argument("--bootstrap", type=int, default=2000)
    p.add_argument("--permutations", type=int, default=10000)
    p.add_argument("--db", dest="db_sub", default=None, help=argparse.SUPPRESS)


def _target_arg(value: str):
    v = value.strip()
    if v.lstrip("-").isdigit():
        return int(v)
    if not v.lower().endswith(".npy"):
        raise InputError("--target", f"expected a map index or a .npy file, got {value!r}")
    return load_target_file(v)


def run(args) -> int:
    store = StudyStore(getattr(args, "db_sub", None) or args.db)
    if args.action == "create":
        target = _target_arg(args.target)
        desc = None if isinstance(target, int) else f"file {Path(args.target).name}"
        study, tokens = store.create_study(args.dataset, target, n=args.n, experts=args.experts.split(","),
                                           methods=args.methods.split(","), expires_days=args.expires_days,
                                           title=args.title, model_path=args.model, target_desc=desc)
        if not tokens:
            raise InputError("--experts", "give at least one expert name")
        import sys

        print(f"study {study.id}: {study.title} ({study.n_per_method} per method, {study.methods})", file=sys.stderr)
        for expert, token in tokens:
            print(expert_link(args.base_url, token))
        return 0
    if args.action == "list":
        for st in store.list_studies():
            print(f"{st['id']}\t{st['status']}\t{st['n_candidates']} images\t{st['title']}")
            for e in st["experts"]:
                print(f"\texpert {e['id']}\t{e['name']}\t{e['rated']} / {e['total']}\t{e['state']}")
        return 0
    if args.action == "close":
        st = store.close_study(args.study_id)
        print(f"study {st.id} closed")
        return 0
    if args.action == "revoke":
        e = store.revoke(args.token_or_expert_id)
        print(f"expert {e.id} ({e.name}) revoked")
        return 0
    if args.action == "add-expert":
        expert, token = store.add_expert(args.study_id, args.name, args.expires_days)
        print(expert_link(args.base_url, token))
        return 0
    if args.action == "results":
        if store.study_summary(args.study_id) is None:
            raise InputError("study", f"no study {args.study_id}")
        if args.window < 1 or args.window % 2 == 0:
            raise InputError("--window", f"must be an odd positive number, got {args.window}")
        for p in store.export(args.study_id, args.out, window=args.window, n_boot=args.bootstrap,
                              n_perm=args.permutations):
            print(p)
        return 0
    raise InputError(None, f"unknown action {args.action}")
