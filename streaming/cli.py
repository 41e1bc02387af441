"""The `index-ticker` command: compute an index from files, serve it live, run its engine or
API alone, show the effective settings."""

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


# Flag (argparse dest) of each settings key a service command may have; a flag not given (None)
# leaves the key to the environment, the file or the default.
FLAGS = {
    "host": "host", "port": "port", "redis_url": "redis_url", "feed": "feed",
    "cadence": "cadence", "session": "session", "definition": "definition",
    "fx_rate": "fx", "seed": "seed", "replay_speed": "replay_speed", "replay_date": "replay_date",
    "namespace": "namespace", "log_level": "log_level", "log_format": "log_format",
    "ops_host": "ops_host", "ops_port": "ops_port",
}  # fmt: skip


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The settings keys this command's flags give (None: not given)."""
    flags = {key: getattr(args, flag, None) for key, flag in FLAGS.items()}
    flags["ingest_stream"] = True if getattr(args, "ingest_stream", False) else None
    flags["leader_lease"] = True if getattr(args, "standby", False) else None
    return flags


def run_service(args: argparse.Namespace) -> int:
    """`serve` (engine + API), `api` (the API alone) or `engine` (the engine alone)."""
    from streaming.serve import engine_settings, run_engine, serve
    from streaming.settings import effective_settings

    effective = effective_settings(args.config, flag_values(args))
    if args.command == "engine":
        run_engine(engine_settings(effective))
    else:
        serve(effective.settings, api_only=args.command == "api")
    return 0


def run_settings(args: argparse.Namespace) -> int:
    """Print the effective settings, each with where its value came from; never a secret."""
    from streaming.settings import display_value, effective_settings, env_name, secrets_given

    effective = effective_settings(args.config)
    keys = list(effective.sources)
    if args.json:
        document = {
            "config": effective.config,
            "settings": {
                key: {"value": getattr(effective.settings, key), "source": effective.sources[key]}
                for key in keys
            },
            "secrets": secrets_given(),
        }
        print(json.dumps(document, indent=2))
        return 0
    print(f"# settings file: {effective.config or '(none)'}")
    rows = [("key", "value", "source", "variable")]
    for key in keys:
        value = display_value(getattr(effective.settings, key))
        rows.append((key, value, effective.sources[key], env_name(key)))
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    for key, value, source, variable in rows:
        print(f"{key:{widths[0]}}  {value:{widths[1]}}  {source:{widths[2]}}  {variable}")
    given = ", ".join(f"{name} {state}" for name, state in secrets_given().items())
    print(f"# secrets (values never shown): {given}")
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


def add_listen_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8000)")


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """What an engine computes and from which ticks: the same for serve and engine."""
    parser.add_argument(
        "--feed",
        help="tick source: simulator (default), none (ingest only), iss (the MOEX ISS poller) "
        "or replay:PATH (CSV/JSONL)",
    )
    parser.add_argument(
        "--replay-speed",
        type=float,
        help="with replay: N = recorded time at N× (the engine's clock runs from the file's first "
        "tick, so the grid and the session are the recorded day's; default 1); 0 = flat out",
    )
    parser.add_argument(
        "--replay-date",
        help="with replay of a MOEX trades file without a TRADEDATE column: its trading day, "
        "YYYY-MM-DD (TRADETIME is Moscow time on that day)",
    )
    parser.add_argument(
        "--namespace",
        help="Redis key prefix (default index-ticker): a replay goes into a namespace of its own",
    )
    parser.add_argument(
        "--cadence",
        type=int,
        help="seconds between publications, 1..3600 dividing an hour (default 15)",
    )
    parser.add_argument(
        "--session",
        choices=["always", "moex"],
        help="always: publish around the clock (default); moex: only 10:00-18:50 Moscow time "
        "on weekdays (hours from the definition)",
    )
    parser.add_argument(
        "--definition",
        help="index definition or family TOML (default: the shipped family: IMOEX, RTSI, "
        "MOEXBC, MOEX10, MOEXOG, BANKS)",
    )
    parser.add_argument(
        "--fx", type=positive_number, help="USD/RUB rate for RTSI (default: definition's)"
    )
    parser.add_argument("--seed", type=int, help="simulator seed (default 1)")


def add_process_options(parser: argparse.ArgumentParser) -> None:
    """Logging and the settings file: every service command has them."""
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="log level"
    )
    parser.add_argument(
        "--log-format", choices=["text", "json"], help="log lines: text (default) or json"
    )
    parser.add_argument(
        "--config",
        help="settings TOML file (default: INDEX_TICKER_CONFIG); INDEX_TICKER_<KEY> variables "
        "override it and flags given here override both",
    )


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
            "simulator feed, http://127.0.0.1:8000, publishing around the clock. Every setting "
            "also comes from INDEX_TICKER_<KEY> variables (docs/operations.md)."
        ),
    )
    add_listen_options(s)
    s.add_argument(
        "--redis-url",
        help="keep state, history and fan-out in Redis (e.g. redis://127.0.0.1:6379/0); "
        "default: in memory",
    )
    add_engine_options(s)
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
    add_process_options(s)

    e = commands.add_parser(
        "engine",
        help="run the calculation and publication alone, with an operations port",
        description=(
            "The engine alone: ticks from its feed and from the durable Redis ingest stream, "
            "values committed to Redis and published there for `index-ticker api` processes. "
            "Redis is required; the ingest stream and the leader lease are always on, so a "
            "second engine stands by and takes over. /healthz and /readyz on the operations "
            "port (default 127.0.0.1:9108); SIGTERM gives the lease up at once."
        ),
    )
    e.add_argument("--redis-url", help="Redis for state, ingest stream and lease (required)")
    add_engine_options(e)
    e.add_argument("--ops-host", help="operations port address (default 127.0.0.1)")
    e.add_argument("--ops-port", type=int, help="operations port (default 9108)")
    add_process_options(e)

    a = commands.add_parser(
        "api",
        help="run the REST/WebSocket API and the dashboard alone, from an engine's Redis",
        description=(
            "A stateless API process: values, history and the live fan-out come from Redis, "
            "where an engine (`index-ticker engine`, or `serve --redis-url ... --ingest-stream`) "
            "commits them; POST /v1/ticks appends to that engine's durable ingest stream. Run "
            "any number of these behind a load balancer."
        ),
    )
    add_listen_options(a)
    a.add_argument("--redis-url", help="the engine's Redis (required), e.g. redis://host:6379/0")
    a.add_argument("--namespace", help="the engine's Redis key prefix (default index-ticker)")
    a.add_argument("--definition", help="the engine's index definition or family TOML")
    add_process_options(a)

    t = commands.add_parser(
        "settings",
        help="print the effective settings and where each value came from",
        description=(
            "Defaults, then the settings file (--config, else INDEX_TICKER_CONFIG), then "
            "INDEX_TICKER_<KEY> variables: each key's value and its source (default, file, env). "
            "Secrets are not settings and are never shown, only whether they are set."
        ),
    )
    t.add_argument("--config", help="settings TOML file")
    t.add_argument("--json", action="store_true", help="one JSON document instead of a table")

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
        if args.command == "settings":
            return run_settings(args)
        return run_service(args)
    except IndexTickerError as error:
        print(f"index-ticker: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
