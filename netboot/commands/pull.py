"""`netboot pull URL`: fetch a model into the cache (resuming, verifying) and print its local path."""

from __future__ import annotations

import argparse

from netboot.commands.options import add_network_arguments, network_options


def add_parser(sub) -> None:
    pull = sub.add_parser("pull", help="fetch a model from an http(s):// URL into the cache; print its local path")
    pull.add_argument("url", help="the model's URL (a file, or a SafeTensors directory ending in /)")
    pull.add_argument("--tokenizer", default=None, metavar="URL", help="tokenizer URL, when not beside the model")
    add_network_arguments(pull, memory=False)
    pull.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from netboot.formats.layout import ModelLayout
    from netboot.remote.fetch import FetchOptions, pull
    from netboot.sources.urls import is_url

    if not is_url(args.url) and not args.fallback:
        from netboot.errors import NetbootError

        raise NetbootError(f"not an http(s) URL: {args.url}")
    fetched = pull(args.url, args.tokenizer, FetchOptions(**network_options(args)), layout=ModelLayout())
    print(fetched.path)
    return 0
