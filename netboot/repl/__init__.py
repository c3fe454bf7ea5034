"""`netboot chat`: a chat in the terminal on the serving engine.

- ``repl``: the loop (read, command or turn, stream the reply)
- ``terminal``: input: the prompt, line editing and history, \"\"\" blocks, plain lines from a pipe
- ``reply``: one reply streamed, Ctrl+C cancelling it at the engine
- ``commands``: the slash commands; ``reports``: what /stats, /model_info and /models print
- ``session``: the conversation and its save/load; ``settings``: the sampling settings /set changes
"""
