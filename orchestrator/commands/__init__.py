"""One module per subcommand: each has `add_parser(commands)` and `run(args) -> int`
(`completion` is also given the root parser, which it describes).

A command module parses nothing by hand and owns no logic of its own: it turns
arguments into settings, calls into the package, and returns an exit code.
"""
