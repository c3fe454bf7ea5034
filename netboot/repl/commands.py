"""The slash commands of `netboot chat`. Each takes the chat's `Context` and the rest of its line; a problem is a
`NetbootError`, which the loop prints as one line before the next prompt."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from netboot.engine.requests import Finished
from netboot.errors import NetbootError
from netboot.repl import reports
from netboot.repl.session import Session


@dataclass
class Context:
    """What the commands act on: the served model, the conversation, where to write, the last reply's record."""

    served: Any  # netboot.commands.engine_options.Served
    session: Session
    out: TextIO
    ref: str | None = None  # the model as given on the command line (None: the default model)
    cache_dir: str | None = None
    token: str | None = None
    last: Finished | None = None

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()


LEAVE = True  # what a command returns to end the chat


def do_help(ctx: Context, rest: str) -> None:
    lines = ["Available commands:"]
    for names, _, usage, what in COMMANDS:
        lines.append(f"  {(' | '.join(names) + (' ' + usage if usage else '')):<36} {what}")
    lines.append('  """                                  start or end a message of several lines')
    lines.append("Ctrl+C stops a reply; Ctrl+D or /bye leaves.")
    ctx.say("\n".join(lines))


def do_bye(ctx: Context, rest: str) -> bool:
    return LEAVE


def do_reset(ctx: Context, rest: str) -> None:
    ctx.session.reset()
    ctx.last = None
    ctx.say("Started a new conversation.")


def do_stats(ctx: Context, rest: str) -> None:
    ctx.say(reports.stats(ctx.last, ctx.served.engine.snapshot()))


def do_model_info(ctx: Context, rest: str) -> None:
    ctx.say(reports.model_info(ctx.served, ctx.ref))


def do_models(ctx: Context, rest: str) -> None:
    ctx.say(reports.models(ctx.ref, Path(ctx.served.loaded.file.path), ctx.cache_dir, ctx.token))


def do_set(ctx: Context, rest: str) -> None:
    if not rest:
        ctx.say(ctx.session.settings.shown())
        return
    name, _, value = rest.partition(" ")
    if not value.strip():
        raise NetbootError(f"/set {name} needs a value (/set alone shows the settings)")
    ctx.session.settings = ctx.session.settings.with_value(name, value)
    ctx.say(f"Set {name} to {value.strip()}.")


def do_system(ctx: Context, rest: str) -> None:
    if not rest:
        ctx.say(ctx.session.system if ctx.session.system else "(no system prompt)")
        return
    ctx.session.system = rest
    ctx.say("Set the system prompt.")


def do_save(ctx: Context, rest: str) -> None:
    if not rest:
        raise NetbootError("/save needs a file name")
    path = ctx.session.save(rest)
    ctx.say(f"Saved {len(ctx.session.messages)} messages to {path}.")


def do_load(ctx: Context, rest: str) -> None:
    if not rest:
        raise NetbootError("/load needs a file name")
    ctx.session = Session.load(rest)
    ctx.last = None
    ctx.say(f"Loaded {len(ctx.session.messages)} messages from {Path(rest).expanduser()}.")


Handler = Callable[[Context, str], "bool | None"]
# name(s), handler, what follows the name, what it does
COMMANDS: list[tuple[tuple[str, ...], Handler, str, str]] = [
    (("/help", "/?"), do_help, "", "this list"),
    (("/set",), do_set, "[NAME VALUE]", "show the settings, or set temperature, top_k, top_p, min_p, "
                                        "repeat_penalty, seed (none: random) or max_tokens"),
    (("/system",), do_system, "[TEXT]", "show or set the system prompt"),
    (("/reset", "/clear"), do_reset, "", "start a new conversation"),
    (("/stats",), do_stats, "", "the last reply's tokens and speeds, and the KV cache in use"),
    (("/model_info",), do_model_info, "", "architecture, sizes, source, chat template, placement"),
    (("/models",), do_models, "", "the models the source (a server's catalog, or the local cache) offers"),
    (("/save",), do_save, "FILE", "save the conversation (system prompt, messages, settings) as JSON"),
    (("/load",), do_load, "FILE", "continue a saved conversation"),
    (("/bye", "/exit"), do_bye, "", "leave"),
]
BY_NAME: dict[str, Handler] = {name: handler for names, handler, _, _ in COMMANDS for name in names}


def is_command(line: str) -> bool:
    return line.startswith("/")


def run_command(ctx: Context, line: str) -> bool:
    """Run a slash command line; True when the chat should end. Raises NetbootError for a problem."""
    name, _, rest = line.strip().partition(" ")
    handler = BY_NAME.get(name.lower())
    if handler is None:
        raise NetbootError(f"unknown command {name} (/help lists them)")
    return bool(handler(ctx, rest.strip()))
