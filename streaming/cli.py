"""The `index-ticker` command: compute an index from files, or serve it live."""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streaming.arguments import positive_number
from streaming.errors import ConfigError, IndexTickerError
from streaming.methodology.base import load_base_csv
from streaming.methodology.calculator import Calculator, IndexSpec

log = logging.getLogger("index_ticker")


def read_prices(path: str) -> dict[str, float]:
    """A CSV of secid,price (a header line is optional); errors name the row and column."""
    prices: dict[str, float] = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError("prices", f"cannot read: {error.strerror}", path) from None
    for row_number, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if len(row) < 2:
            raise ConfigError(f"row {row_number}", "expected secid,price", path)
        secid, cell = row[0].strip(), row[1].strip()
        if row_number == 1 and secid.lower() in ("secid", "secids", "ticker"):
            continue
        try:
            price = float(cell)
        except ValueError:
            raise ConfigError(
                f"row {row_number}, column 'price'", f"not a number: {cell!r}", path
            ) from None
        if not (price > 0 and price != float("inf")):
            raise ConfigError(
                f"row {row_number}, column 'price'", f"must be positive, got {cell!r}", path
            )
        if secid in prices:
            raise ConfigError(f"row {row_number}, column 'secid'", f"duplicate {secid!r}", path)
        prices[secid] = price
    return prices


def compute(args: argparse.Namespace) -> dict[str, Any]:
    """Index value from a base file, a divisor and optional prices and FX."""
    base = load_base_csv(args.base)
    prices = read_prices(args.prices) if args.prices else {}
    unknown = sorted(set(prices) - set(base.secids))
    if unknown:
        raise ConfigError("prices", f"secids not in the base: {', '.join(unknown)}", args.prices)
    calculator = Calculator(base, prices)
    capitalization = calculator.resum()
    result: dict[str, Any] = {
        "capitalization": capitalization,
        "divisor": args.divisor,
        "value": IndexSpec("INDEX", "RUB", args.divisor).value(capitalization, None),
        "lines": len(base),
        "priced_from_file": len(prices),
    }
    if args.fx is not None:
        result["fx"] = args.fx
        result["usd_divisor"] = args.usd_divisor
        result["usd_value"] = IndexSpec("INDEX_USD", "USD", args.usd_divisor).value(
            capitalization, args.fx
        )
    return result


def run_compute(args: argparse.Namespace) -> int:
    if (args.fx is None) != (args.usd_divisor is None):
        raise ConfigError("--fx/--usd-divisor", "give both or neither")
    print(json.dumps(compute(args), indent=2))
    return 0


def run_service(args: argparse.Namespace) -> int:
    """`serve` (engine + API) or `api` (the API alone): settings file, then flags over it."""
    from streaming.serve import serve
    from streaming.settings import Settings, load_settings_file

    settings = load_settings_file(args.config) if args.config else Settings()
    # Flags the command has; a flag not given (None) leaves the file's or default value.
    flags = {
        "host": "host", "port": "port", "redis_url": "redis_url", "feed": "feed",
        "cadence": "cadence", "session": "session", "definition": "definition",
        "fx_rate": "fx", "seed": "seed", "replay_speed": "replay_speed",
        "namespace": "namespace", "log_level": "log_level",
    }  # fmt: skip
    overrides = {key: getattr(args, flag, None) for key, flag in flags.items()}
    overrides["ingest_stream"] = True if getattr(args, "ingest_stream", False) else None
    overrides["leader_lease"] = True if getattr(args, "standby", False) else None
    serve(settings.with_overrides(**overrides), api_only=args.command == "api")
    return 0


# Subcommands with parsers of their own: name -> (module, help).
DELEGATED = {
    "fit-base": ("streaming.fitbase", "fit an index base from MOEX end-of-day files"),
    "weights": ("streaming.weights", "weight-limiting coefficients W of a base (issuer/top caps)"),
    "admin": ("streaming.admin_client", "schedule base changes, post FX, show bases (admin API)"),
    "replay": ("streaming.replay_cli", "replay a recorded trade file and summarise it"),
}


def run_delegated(name: str, argv: list[str]) -> int:
    module = importlib.import_module(DELEGATED[name][0])
    code: int = module.main(argv)
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="index-ticker",
        description="Real-time IMOEX and RTSI: compute index values, or serve them live.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = commands.add_parser(
        "compute",
        help="compute an index once from a base file and prices",
        description="Compute MC = Σ P·Q·FF·W and the index MC/D (and MC/(FX·D_usd)); print JSON.",
    )
    c.add_argument("--base", required=True, help="index base CSV in the MOEX ISS analytics layout")
    c.add_argument(
        "--divisor", required=True, type=positive_number, help="index divisor D (roubles)"
    )
    c.add_argument(
        "--prices",
        help="CSV of secid,price in roubles; lines it does not name keep the base's waprice",
    )
    c.add_argument(
        "--fx", type=positive_number, help="USD/RUB rate (roubles per dollar) for usd_value"
    )
    c.add_argument(
        "--usd-divisor",
        type=positive_number,
        help="divisor of the dollar index (with --fx), e.g. RTSI",
    )

    s = commands.add_parser(
        "serve",
        help="run the engine, the API and the dashboard in one process",
        description=(
            "Run engine + REST/WebSocket API + dashboard. With no options: in-memory state, the "
            "simulator feed, http://127.0.0.1:8000, publishing around the clock."
        ),
    )
    s.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, help="port to listen on (default 8000)")
    s.add_argument(
        "--redis-url",
        help="keep state, history and fan-out in Redis (e.g. redis://127.0.0.1:6379/0); "
        "default: in memory",
    )
    s.add_argument(
        "--feed",
        help="tick source: simulator (default), none (ingest only), iss (the MOEX ISS poller) "
        "or replay:PATH (CSV/JSONL)",
    )
    s.add_argument(
        "--replay-speed",
        type=float,
        help="with replay: N = recorded time at N× (the engine's clock runs from the file's first "
        "tick, so the grid and the session are the recorded day's; default 1); 0 = flat out",
    )
    s.add_argument(
        "--ingest-stream",
        action="store_true",
        help="with --redis-url: POST /v1/ticks writes to the durable Redis stream the engine "
        "reads, so ticks accepted before a crash are applied after it",
    )
    s.add_argument(
        "--standby",
        action="store_true",
        help="with --redis-url: take part in leader election; run two or more such processes and "
        "the lease holder publishes while the others stand by and take over",
    )
    s.add_argument(
        "--namespace",
        help="Redis key prefix (default index-ticker): a replay goes into a namespace of its own",
    )
    s.add_argument(
        "--cadence",
        type=int,
        help="seconds between publications, 1..3600 dividing an hour (default 15)",
    )
    s.add_argument(
        "--session",
        choices=["always", "moex"],
        help="always: publish around the clock (default); moex: only 10:00-18:50 Moscow time "
        "on weekdays (hours from the definition)",
    )
    s.add_argument(
        "--definition",
        help="index definition or family TOML (default: the shipped family: IMOEX, RTSI, "
        "MOEXBC, MOEX10, MOEXOG, BANKS)",
    )
    s.add_argument(
        "--fx", type=positive_number, help="USD/RUB rate for RTSI (default: definition's)"
    )
    s.add_argument("--seed", type=int, help="simulator seed (default 1)")
    s.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="log level")
    s.add_argument("--config", help="settings TOML file; flags given here override it")

    a = commands.add_parser(
        "api",
        help="run the REST/WebSocket API and the dashboard alone, from an engine's Redis",
        description=(
            "A stateless API process: values, history and the live fan-out come from Redis, "
            "where an engine (`serve --redis-url ... --ingest-stream [--standby]`) commits "
            "them; POST /v1/ticks appends to that engine's durable ingest stream. Run any "
            "number of these behind a load balancer."
        ),
    )
    a.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    a.add_argument("--port", type=int, help="port to listen on (default 8000)")
    a.add_argument("--redis-url", help="the engine's Redis (required), e.g. redis://host:6379/0")
    a.add_argument("--namespace", help="the engine's Redis key prefix (default index-ticker)")
    a.add_argument("--definition", help="the engine's index definition or family TOML")
    a.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="log level")
    a.add_argument("--config", help="settings TOML file; flags given here override it")

    for name, (_, text) in DELEGATED.items():
        commands.add_parser(name, help=f"{text} (see {name} --help)", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] and arguments[0] in DELEGATED:
        return run_delegated(arguments[0], arguments[1:])
    args = build_parser().parse_args(arguments)
    try:
        if args.command == "compute":
            return run_compute(args)
        return run_service(args)
    except IndexTickerError as error:
        print(f"index-ticker: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
