"""One module per CLI verb. Each exposes `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`.

Modules import heavy libraries (torch, open_clip) inside `run`, so `semples --help` stays fast.
"""
