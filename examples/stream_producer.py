"""A feed handler in a few lines: put trades on index-ticker's Redis tick stream.

    python examples/stream_producer.py --redis-url redis://127.0.0.1:6379/0 \
        --secid SBER --price 250.10 --volume 10

Each trade is one stream entry with the fields secid, price, time and volume (docs/feeds.md,
"Redis Stream"); the leading engine reads the stream in its consumer group and applies them.
The same with redis-cli:

    redis-cli XADD index-ticker:ticks MAXLEN '~' 1000000 '*' \
        secid SBER price 250.10 time 2026-11-20T07:00:01Z volume 10
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from redis import Redis


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--namespace", default="index-ticker", help="the engine's key prefix")
    parser.add_argument("--secid", required=True, help="the share's exchange code, e.g. SBER")
    parser.add_argument("--price", required=True, type=float, help="trade price, roubles")
    parser.add_argument("--volume", type=float, help="shares traded")
    parser.add_argument("--count", type=int, default=1, help="send the trade this many times")
    args = parser.parse_args()

    redis = Redis.from_url(args.redis_url)
    stream = f"{args.namespace}:ticks"
    for _ in range(args.count):
        trade = {
            "secid": args.secid,
            "price": repr(args.price),
            "time": datetime.now(UTC).isoformat(),
        }
        if args.volume is not None:
            trade["volume"] = repr(args.volume)
        # Bounded like the engine's own appends: the stream never grows without limit.
        entry = redis.xadd(stream, trade, maxlen=1_000_000, approximate=True)
        print(entry.decode())


if __name__ == "__main__":
    main()
