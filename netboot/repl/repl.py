"""The chat loop: read a message, run a slash command or send the whole conversation to the engine (which reuses
the KV cache of the turns before, so only the new tokens are computed), stream the reply, and go on until Ctrl+D
or /bye. A problem with one message or command is one line on stderr; the chat goes on."""

from __future__ import annotations

import sys

from netboot.engine.requests import Request
from netboot.errors import ContextLimitError, NetbootError
from netboot.repl.commands import Context, is_command, run_command
from netboot.repl.reply import Reply, stream_reply
from netboot.repl.terminal import Terminal

EXIT_HINT = "Use Ctrl + d or /bye to exit."
RESET_HINT = "/reset starts a new conversation"


def error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_chat(ctx: Context, terminal: Terminal, repeat_last_n: int = 64) -> int:
    """Chat until the input ends or the user leaves; the exit status."""
    if terminal.interactive:
        served = ctx.served
        note(f"netboot chat: {served.name} ({served.chat.name} chat format, {served.engine.context} positions). "
             "/help for commands, Ctrl+D or /bye to leave.")
    try:
        while True:
            try:
                typed = terminal.read()
            except KeyboardInterrupt:
                note("\n" + EXIT_HINT)
                continue
            if typed is None:
                if terminal.interactive:
                    ctx.out.write("\n")
                return 0
            try:
                if _act(ctx, *typed, repeat_last_n, terminal.interactive):
                    return 0
            except KeyboardInterrupt:  # during a command, or in the instant around a reply: back to the prompt
                ctx.session.drop_unanswered()
                note("")
    finally:
        terminal.close()


def _act(ctx: Context, message: str, block: bool, repeat_last_n: int, interactive: bool) -> bool:
    """Run a command or send a message; True when the chat should end."""
    if not block and is_command(message):
        return _command(ctx, message)
    if message.strip():
        turn(ctx, message, repeat_last_n, interactive)
    return False


def _command(ctx: Context, line: str) -> bool:
    try:
        return run_command(ctx, line)
    except NetbootError as e:
        error(str(e))
        return False


def turn(ctx: Context, message: str, repeat_last_n: int, interactive: bool) -> None:
    """Send the conversation with `message` added, stream the reply, keep it. A message the engine refuses leaves
    the conversation as it was."""
    session, served = ctx.session, ctx.served
    session.add("user", message)
    settings = session.settings
    try:
        ids = served.chat.encode(session.conversation())
        handle = served.engine.submit(Request(ids, settings.max_tokens, settings.params(repeat_last_n),
                                              stop_token_ids=served.chat.stop_token_ids))
    except NetbootError as e:
        session.messages.pop()
        error(f"{e}; {RESET_HINT}" if isinstance(e, ContextLimitError) else str(e))
        return
    try:
        reply = stream_reply(handle, ctx.out)
    except BaseException:
        handle.cancel()  # never leave a reply running that nobody reads
        raise
    ctx.out.write("\n\n" if interactive else "\n")
    ctx.out.flush()
    ctx.last = reply.finished
    _keep(ctx, reply)


def _keep(ctx: Context, reply: Reply) -> None:
    finished = reply.finished
    if finished.reason == "error":
        ctx.session.messages.pop()
        error(f"the reply failed: {finished.detail}")
        return
    ctx.session.add("assistant", reply.text)
    if reply.context_full:
        error(f"the conversation filled the context ({ctx.served.engine.context} positions) and the reply was cut; "
              f"{RESET_HINT}")
