"""`orchestrator config show`: the effective settings, and where each value came from."""

from __future__ import annotations

import argparse
import json
import sys

from orchestrator.commands._flags import add_settings_arguments, settings_from
from orchestrator.commands._types import Subcommands
from orchestrator.errors import ConfigError
from orchestrator.escape import escape
from orchestrator.settings import (
    RerunSettings,
    describe,
    environ,
    known_secrets,
    load_token,
    token_status,
    typed,
)
from orchestrator.shared.store import fingerprint
from orchestrator.ui.logs import configure_logging

CONFIG_EXAMPLES = """\
examples:
  # what would a plain `orchestrator rerun` use here, and why?
  orchestrator config show

  # check a profile before the incident call, with the flags you mean to add
  orchestrator config show --config configs/incident.toml --rate 2/s

  # in a script: the same as JSON
  orchestrator config show --config configs/cron.toml --json
"""


def add_parser(commands: Subcommands) -> None:
    config = commands.add_parser(
        "config",
        help="show the effective settings and where each comes from",
        description="Settings: defaults < --config TOML file < ORCHESTRATOR_<KEY> < flags.",
        epilog=CONFIG_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = config.add_subparsers(dest="action", required=True, parser_class=type(config))
    show = actions.add_parser(
        "show",
        help="print every setting, its value and its source",
        description=(
            "Print every setting rerun would use, with where its value came from: default, "
            "file PATH, env ORCHESTRATOR_<KEY> (or ALTOSTRAT_BASE_URL), or flag. Takes the "
            "same flags as rerun. The token is only said to be set or unset. Exit 2 on an "
            "invalid or unknown key, naming it and where it was set."
        ),
        epilog=CONFIG_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_settings_arguments(show)
    show.add_argument("--json", action="store_true", help="print JSON instead of a table")
    show.set_defaults(handler=run_show)


def run_show(args: argparse.Namespace) -> int:
    loaded = settings_from(args)
    settings = loaded.settings
    secrets = known_secrets(environ(), settings.token_file)
    configure_logging(settings.log_level, settings.log_format, secrets=secrets)
    loaded.warn()
    values = describe(settings)
    token, token_origin = token_status(environ(), loaded.settings.token_file)
    rows = [(key, values[key], loaded.origins[key]) for key in values]
    rows.append(("token", token, token_origin))
    rows.append(("rate_budget_key", *_budget_key(loaded.settings)))
    if args.json:
        # `value` typed for scripts, `text` as the table shows it (and as a user writes it).
        values_typed: dict[str, object] = {**typed(settings), "token": token}
        values_typed["rate_budget_key"] = rows[-1][1]
        shown = {
            key: {"value": values_typed[key], "text": text, "source": origin}
            for key, text, origin in rows
        }
        sys.stdout.write(json.dumps(shown, indent=2) + "\n")
        return 0
    # Paths and origins are the user's own text: shown escaped, as every value from outside.
    rows = [(key, escape(value), escape(origin)) for key, value, origin in rows]
    width = max(len(key) for key, _, _ in rows)
    value_width = max(len(value) for _, value, _ in rows)
    if loaded.config is not None:
        sys.stdout.write(f"# config file: {escape(str(loaded.config))}\n")
    for key, value, origin in rows:
        sys.stdout.write(f"{key:<{width}}  {value:<{value_width}}  {origin}\n")
    return 0


def _budget_key(settings: RerunSettings) -> tuple[str, str]:
    """The fingerprint that keys the token's shared rate budget, and what it is of: never
    the token, which it does not reveal (see ratestore.fingerprint)."""
    if settings.store_spec.kind == "none":
        return "unused", "rate_store none"
    try:
        token = load_token(environ(), settings.token_file)
    except ConfigError:
        return "unset", "needs the token"
    return fingerprint(settings.base_url, token), "fingerprint of the token and base_url"
