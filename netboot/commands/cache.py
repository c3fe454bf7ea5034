"""`netboot cache ls | rm URL|SHA_PREFIX | prune [--max-size SIZE] [--older-than DAYS]`: the models fetched over
HTTP (the content-addressed cache of netboot.remote.cache)."""

from __future__ import annotations

import argparse
import time

from netboot.commands import Limit, check_limits, flag_size

LIMITS = {"older_than": Limit("--older-than", 0)}


def add_parser(sub) -> None:
    cache = sub.add_parser("cache", help="list, remove or prune the models fetched over HTTP")
    cache.add_argument("--cache-dir", default=None, metavar="DIR",
                       help="cache root (default: $NETBOOT_CACHE or ~/.cache/netboot)")
    actions = cache.add_subparsers(dest="action", required=True)
    actions.add_parser("ls", help="a table: URL, size, sha256 prefix, last used")
    rm = actions.add_parser("rm", help="remove a URL (a directory URL ending in / removes all under it) or a sha256")
    rm.add_argument("target", metavar="URL|SHA_PREFIX")
    prune = actions.add_parser("prune", help="remove leftovers of interrupted downloads and unreferenced files; "
                               "with options, also old or least recently used models")
    prune.add_argument("--max-size", default=None, metavar="SIZE", help="keep at most this much (e.g. 2G, 500M)")
    prune.add_argument("--older-than", type=float, default=None, metavar="DAYS",
                       help="remove what was not used in this many days")
    for p in (actions.choices["ls"], rm, prune):
        p.add_argument("--cache-dir", default=argparse.SUPPRESS, metavar="DIR", help=argparse.SUPPRESS)
    cache.set_defaults(handler=main, check=check)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def check(args: argparse.Namespace) -> None:
    """prune's --older-than and --max-size, before the cache is touched."""
    if args.action == "prune":
        check_limits(args, LIMITS)
        if args.max_size is not None:
            flag_size("--max-size", args.max_size)


def main(args: argparse.Namespace) -> int:
    from netboot.remote.cache import Cache

    check(args)
    cache = Cache(args.cache_dir)
    if args.action == "ls":
        rows = cache.listing()
        if not rows:
            print(f"(no models fetched over HTTP in {cache.root})")
            return 0
        width = max(3, *(len(r["url"]) for r in rows))
        print(f"{'URL':<{width}}  {'SIZE':>10}  {'SHA256':<12}  LAST USED")
        total = 0
        for r in rows:
            used = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.get("last_used", 0)))
            missing = "" if r["present"] else "  (missing)"
            print(f"{r['url']:<{width}}  {_mb(r.get('size', 0)):>10}  {r.get('sha256', '')[:12]:<12}  {used}{missing}")
            total += r.get("size", 0) if r["present"] else 0
        print(f"{len(rows)} file(s), {_mb(total)} in {cache.root}")
        return 0
    if args.action == "rm":
        for url in cache.remove(args.target):
            print(f"removed {url}")
        return 0
    max_size = flag_size("--max-size", args.max_size) if args.max_size is not None else None
    removed, freed = cache.prune(max_size=max_size, older_than_days=args.older_than)
    print(f"pruned {removed} file(s), {_mb(freed)} freed")
    return 0
