"""`netboot info`: describe a model file."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    info = sub.add_parser("info", help="describe a model file: architecture, tensors, layer byte ranges, tokenizer")
    info.add_argument("model", nargs="?", default=None)
    info.add_argument("--tokenizer", default=None)
    info.add_argument("--json", action="store_true", help="print the description as JSON")
    info.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from netboot.formats import open_model
    from netboot.info import describe, render
    from netboot.loader import resolve

    file = open_model(resolve(args.model), args.tokenizer)
    report = describe(file)
    if args.json:
        import json

        print(json.dumps(report, indent=2))
    else:
        print(render(report))
    return 0
