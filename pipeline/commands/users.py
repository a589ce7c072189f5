"""The ``users`` command: the people who may use the web app and the API, each with a role
(:mod:`gallery.users`).

    run_pipeline.py users add NAME --role viewer|investigator|admin [--password-env VAR | --password-prompt]
    run_pipeline.py users list [--format table|json]
    run_pipeline.py users disable NAME
    run_pipeline.py users rotate NAME

Each change is appended to the audit trail (never a token or password). ``add`` and ``rotate`` print the user's
new token on stdout, once: only its salted hash is stored, and ``rotate`` ends the old token and every session of
the user. A password (for the login page) is read from the environment variable ``--password-env`` names or typed
at a prompt, never given on the command line. An unknown user, a taken name, a bad role or a refused password: one
line, exit 2.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys

from gallery.db import Database
from gallery.names import shown
from gallery.users import (
    Account,
    UserInputError,
    add_user,
    check_role,
    disable_user,
    list_users,
    rotate_user,
)
from pipeline.commands.common import add_config_options, config_of, db_of
from pipeline.services.audit import audited, trail_of

logger = logging.getLogger(__name__)

__all__ = ["register", "run_users"]

COLUMNS = ("name", "role", "created_at", "rotated_at", "disabled_at", "password")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "users",
        help="users of the web app and API: add, list, disable, rotate",
        description=__doc__.split("\n\n")[0],
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="add a user and print their token (once)")
    add.add_argument("name", help="the user's name")
    add.add_argument("--role", required=True, help="viewer, investigator or admin")
    secret = add.add_mutually_exclusive_group()
    secret.add_argument("--password-env", metavar="VAR", help="read the user's password from this variable")
    secret.add_argument("--password-prompt", action="store_true", help="type the user's password at a prompt")
    listing = actions.add_parser("list", help="the users, their roles and state (never a token)")
    listing.add_argument("--format", choices=("table", "json"), default="table")
    for action, what in (("disable", "disable a user (token, password, sessions)"), ("rotate", "new token")):
        one = actions.add_parser(action, help=what)
        one.add_argument("name", help="the user's name")
    for sub in (add, listing, *[actions.choices[a] for a in ("disable", "rotate")]):
        add_config_options(sub)
        sub.set_defaults(func=run_users)


def _password(args: argparse.Namespace) -> str | None:
    if args.password_env:
        value = os.environ.get(args.password_env)
        if value is None:
            raise UserInputError(f"--password-env {args.password_env}: expected a set variable, got none")
        return value
    if args.password_prompt:
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise UserInputError("password: expected the same password twice, got two different ones")
        return first
    return None


def _table(accounts: list[Account]) -> str:
    rows = [list(COLUMNS)] + [
        [shown("" if v is None else str(v)) for v in (a.as_dict()[c] for c in COLUMNS)] for a in accounts
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows)


def run_users(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    if args.action == "add":
        check_role(args.role)  # before a password is asked for
        password = _password(args)
    with Database(db_of(args, cfg), create=False) as db:
        if args.action == "list":
            accounts = list_users(db)
            if args.format == "json":
                print(json.dumps({"rows": [a.as_dict() for a in accounts]}, indent=2))
            else:
                print(_table(accounts))
            return 0
        trail = trail_of(db, cfg.gallery)
        if args.action == "disable":
            with audited(trail, "user.disable", [args.name]):
                account = disable_user(db, args.name)
            logger.info("user %s disabled", account.name)
            print(
                f"user {shown(account.name)!r} disabled at {account.disabled_at.isoformat()}", file=sys.stderr
            )
            return 0
        if args.action == "add":
            details = {"role": args.role, "password": password is not None}
            with audited(trail, "user.add", [args.name], details):
                account, token = add_user(db, args.name, args.role, password)
            what = f"user {shown(account.name)!r} added as {account.role}"
        else:
            with audited(trail, "user.rotate", [args.name]):
                account, token = rotate_user(db, args.name)
            what = f"user {shown(account.name)!r}: token rotated, the old one and its sessions no longer work"
        logger.info("%s", what)
    print(f"{what}; their token follows, shown this once", file=sys.stderr)
    print(token)
    return 0
