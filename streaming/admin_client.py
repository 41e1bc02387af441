"""`index-ticker admin ...`: schedule a base change, show the bases, feed an FX rate, over the
HTTP API of a running service."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import httpx

from streaming.arguments import code_and_number, positive_number

PROG = "index-ticker admin"
ADMIN_TOKEN_ENV = "INDEX_TICKER_ADMIN_TOKEN"
INGEST_TOKEN_ENV = "INDEX_TICKER_INGEST_TOKEN"
TIMEOUT_SECONDS = 30.0
EXIT_OK = 0
EXIT_FAILED = 2  # the request could not be made or the server refused it


class ClientError(Exception):
    """Something the operator has to fix; the message says what."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the admin command group."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Operate a running index-ticker service: base changes and FX rates. "
        f"Tokens come from the environment: {ADMIN_TOKEN_ENV} (base changes), "
        f"{INGEST_TOKEN_ENV} (FX rates); never from the command line.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = commands.add_parser(
        "schedule-base",
        help="schedule a new index base (admin token)",
        description="Send a base CSV (ISS analytics layout) to take effect at a date (start of "
        "that day, exchange local time) or at an ISO 8601 moment (no offset = UTC). Prints the "
        f"scheduled change. Needs {ADMIN_TOKEN_ENV}.",
    )
    s.add_argument("--url", required=True, help="the service, e.g. http://127.0.0.1:8000")
    s.add_argument("--definition", required=True, help="index definition name, e.g. IMOEX")
    s.add_argument("--base", required=True, help="the new base CSV file")
    s.add_argument(
        "--effective",
        required=True,
        help="YYYY-MM-DD (00:00 exchange local time) or an ISO 8601 moment",
    )
    s.add_argument("--reason", default="quarterly review", help="why the base changes")
    s.add_argument(
        "--divisor",
        action="append",
        type=code_and_number,
        default=[],
        metavar="CODE=VALUE",
        help="an official divisor for the new base, e.g. IMOEX=3416313660.29 (repeatable)",
    )
    s.add_argument(
        "--policy",
        choices=["official", "continuity"],
        help="official: adopt the published divisor; continuity: always the computed one "
        "(default: the service's)",
    )

    b = commands.add_parser(
        "bases",
        help="show the bases in force, scheduled and applied changes",
        description="Print GET /v1/bases: the base per definition, scheduled changes and "
        "applied ones with computed and official divisors.",
    )
    b.add_argument("--url", required=True, help="the service, e.g. http://127.0.0.1:8000")

    f = commands.add_parser(
        "fx",
        help="feed a USD/RUB rate (ingest token)",
        description="Send one FX update. With --rate-date it is the CBR rate for that date and "
        "the CBR rule decides when it takes effect; otherwise it takes effect at --time (default "
        f"now). Needs {INGEST_TOKEN_ENV}.",
    )
    f.add_argument("--url", required=True, help="the service, e.g. http://127.0.0.1:8000")
    f.add_argument("--rate", required=True, type=positive_number, help="roubles per US dollar")
    f.add_argument("--rate-date", help="YYYY-MM-DD: the date the CBR set the rate for")
    f.add_argument("--published-at", help="ISO 8601 moment the rate was published (default now)")
    f.add_argument("--time", help="ISO 8601 moment it takes effect (not with --rate-date)")
    f.add_argument("--source", help="a plain token naming where the rate comes from")
    return parser


def token_from(name: str) -> str:
    """The token in environment variable `name` (or the file `name`_FILE names)."""
    token = os.environ.get(name, "").strip()
    file_name = os.environ.get(f"{name}_FILE", "").strip()
    if not token and file_name:
        try:
            token = Path(file_name).read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ClientError(f"{name}_FILE: cannot read {file_name}: {error.strerror}") from None
    if not token:
        raise ClientError(f"no token: set {name}")
    return token


def _endpoint(url: str, path: str) -> str:
    return url.rstrip("/") + path


def _request(
    method: str, url: str, *, token: str | None = None, body: object = None
) -> dict[str, Any]:
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with httpx.Client(timeout=TIMEOUT_SECONDS) as client:
            response = client.request(method, url, headers=headers, json=body)
    except httpx.HTTPError as error:
        raise ClientError(f"{method} {url}: {error}") from None
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.is_error:
        shown = json.dumps(data, ensure_ascii=False) if data is not None else response.text
        raise ClientError(f"{method} {url}: HTTP {response.status_code}: {shown}")
    if not isinstance(data, dict):
        raise ClientError(f"{method} {url}: expected a JSON object, got {response.text[:200]!r}")
    return data


def schedule_base(args: argparse.Namespace) -> dict[str, Any]:
    """POST /v1/admin/bases with the CSV file's text."""
    token = token_from(ADMIN_TOKEN_ENV)
    try:
        text = Path(args.base).read_text(encoding="utf-8")
    except OSError as error:
        raise ClientError(f"--base {args.base}: cannot read: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ClientError(f"--base {args.base}: not UTF-8 text") from None
    body: dict[str, Any] = {
        "definition": args.definition,
        "base_csv": text,
        "effective": args.effective,
        "reason": args.reason,
    }
    if args.divisor:
        divisors = dict(args.divisor)
        if len(divisors) != len(args.divisor):
            raise ClientError("--divisor: an index code is given twice")
        body["official_divisors"] = divisors
    if args.policy is not None:
        body["divisor_policy"] = args.policy
    return _request("POST", _endpoint(args.url, "/v1/admin/bases"), token=token, body=body)


def show_bases(args: argparse.Namespace) -> dict[str, Any]:
    """GET /v1/bases."""
    return _request("GET", _endpoint(args.url, "/v1/bases"))


def send_fx(args: argparse.Namespace) -> dict[str, Any]:
    """POST /v1/fx with one update; a refused update is an error."""
    token = token_from(INGEST_TOKEN_ENV)
    update: dict[str, Any] = {"rate": args.rate}
    for key in ("rate_date", "published_at", "time", "source"):
        value = getattr(args, key)
        if value is not None:
            update[key] = value
    result = _request("POST", _endpoint(args.url, "/v1/fx"), token=token, body=update)
    refused = result.get("rejected") or []
    if refused:
        reasons = "; ".join(str(item.get("reason", item)) for item in refused)
        raise ClientError(f"the FX update was refused: {reasons}")
    return result


_COMMANDS = {"schedule-base": schedule_base, "bases": show_bases, "fx": send_fx}


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Entry point of `index-ticker admin`; prints the server's answer as JSON, returns the exit
    status (2 when the request failed or was refused)."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    stdout = out or sys.stdout
    try:
        result = _COMMANDS[args.command](args)
    except ClientError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(result, indent=2, ensure_ascii=False), file=stdout)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
