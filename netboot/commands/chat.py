"""`netboot chat`: talk with a model in the terminal (`ollama run`'s conventions), on the serving engine."""

from __future__ import annotations

import argparse
import sys

from netboot.commands import check_limits
from netboot.commands.engine_options import add_engine_arguments, check_engine_arguments
from netboot.commands.options import add_sampling_arguments, sampling_limits

LIMITS = sampling_limits(min_tokens=1)


def add_parser(sub) -> None:
    chat = sub.add_parser("chat", help="chat with a model in the terminal",
                          description="Chat with a model: replies stream as they are generated; /help lists the "
                                      'commands, """ starts and ends a message of several lines, Ctrl+C stops a '
                                      "reply, Ctrl+D or /bye leaves. Reads plain lines when stdin is not a terminal.")
    add_engine_arguments(chat)
    group = chat.add_argument_group("sampling (the defaults; /set changes them during the chat)")
    add_sampling_arguments(group, max_tokens=512)
    chat.add_argument("--system", default=None, metavar="TEXT", help="the system prompt (/system changes it)")
    chat.set_defaults(handler=main, check=check)


def check(args: argparse.Namespace) -> None:
    check_engine_arguments(args)
    check_limits(args, LIMITS)


def main(args: argparse.Namespace) -> int:
    check(args)
    from netboot.commands.engine_options import start_engine
    from netboot.repl.commands import Context
    from netboot.repl.repl import run_chat
    from netboot.repl.session import Session
    from netboot.repl.settings import Settings
    from netboot.repl.terminal import Terminal

    settings = Settings(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                        repeat_penalty=args.repeat_penalty, seed=args.seed, max_tokens=args.max_tokens)
    served = start_engine(args)
    try:
        ctx = Context(served, Session(args.system or None, settings=settings), sys.stdout, ref=args.model,
                      cache_dir=args.cache_dir, token=args.token)
        return run_chat(ctx, Terminal(), args.repeat_last_n)
    finally:
        served.close()
