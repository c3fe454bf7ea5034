"""`netboot info`: describe a model file."""

from __future__ import annotations

import argparse

from netboot.commands.options import add_network_arguments, network_options


def add_parser(sub) -> None:
    info = sub.add_parser("info", help="describe a model file: architecture, tensors, layer byte ranges, tokenizer")
    info.add_argument("model", nargs="?", default=None)
    info.add_argument("--tokenizer", default=None)
    info.add_argument("--json", action="store_true", help="print the description as JSON")
    add_network_arguments(info)
    info.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from netboot.formats.report import describe, render
    from netboot.loader import open_ref

    file = open_ref(args.model, args.tokenizer, **network_options(args))
    report = describe(file)
    if args.json:
        import json

        print(json.dumps(report, indent=2))
    else:
        print(render(report))
    return 0
