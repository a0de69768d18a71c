"""`otel-metrics forwarder dead-letters [--replay] [--json]`: the payloads the endpoint refused for good.

Listing reads the outbox file's dead_letters table; replaying posts each one
again (oldest first, over one keep-alive connection, beside a running forwarder
or not): an accepted one leaves the table, one refused again stays with the new
answer, and the first that meets a failing endpoint stops the replay.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from typing import IO, Dict, List

from .delivery import CONNECT_TIMEOUT, DEFAULT_TIMEOUT, DELIVERED, REFUSED, post
from .http_client import Connection, target_for
from .outbox import DeadLetter, DeadLetters, Item

RESPONSE_SHOWN_CHARS = 100


def _utc(unix_time: float) -> str:
    moment = datetime.datetime.fromtimestamp(unix_time, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def show(letters: List[DeadLetter], outbox_path: str, out: IO[str]) -> None:
    """A table, then a line saying how many and how to replay them."""
    if letters:
        out.write(f"{'ID':>6}  {'FAILED AT (UTC)':<19}  {'STATUS':>6}  {'PATH':<8}  RESPONSE\n")
    for letter in letters:
        response = " ".join(letter.response.split())
        if len(response) > RESPONSE_SHOWN_CHARS:
            response = response[: RESPONSE_SHOWN_CHARS - 3] + "..."
        out.write(f"{letter.id:>6}  {_utc(letter.failed_at):<19}  {letter.status:>6}  {letter.path:<8}  {response}\n")
    count = f"{len(letters)} dead letter{'' if len(letters) == 1 else 's'}"
    hint = "; `otel-metrics forwarder dead-letters --replay` resends them" if letters else ""
    out.write(f"{count} in {outbox_path}{hint}\n")


def show_json(letters: List[DeadLetter], out: IO[str]) -> None:
    """One JSON object per line, with the payload itself."""
    for letter in letters:
        document = {
            "id": letter.id,
            "path": letter.path,
            "status": letter.status,
            "response": letter.response,
            "failed_at": _utc(letter.failed_at),
            "payload": json.loads(letter.body),
        }
        out.write(json.dumps(document, sort_keys=True) + "\n")


def replay(store: DeadLetters, metrics_url: str, out: IO[str], timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Post every dead letter again; True when the endpoint accepted them all."""
    return asyncio.run(_replay(store, metrics_url, out, timeout))


async def _replay(store: DeadLetters, metrics_url: str, out: IO[str], timeout: float) -> bool:
    letters = store.list()
    connection = Connection(target_for(metrics_url), CONNECT_TIMEOUT, timeout, asyncio.get_running_loop())
    counts: Dict[str, int] = {DELIVERED: 0, REFUSED: 0}
    try:
        for letter in letters:
            outcome = await post(connection, Item(letter.id, letter.path, letter.body, letter.received))
            if outcome.kind == DELIVERED:
                store.delivered(letter.id)
            elif outcome.kind == REFUSED:
                store.refused_again(letter.id, outcome.status or 0, outcome.detail)
            else:
                what = f"HTTP {outcome.status}" if outcome.status else outcome.detail
                out.write(f"stopped: {metrics_url} is failing ({what}); try again later\n")
                break
            counts[outcome.kind] += 1
    finally:
        connection.close()
    left = len(letters) - counts[DELIVERED]
    out.write(
        f"replayed to {metrics_url}: {counts[DELIVERED]} delivered, {counts[REFUSED]} refused again; "
        f"{left} dead letter{'' if left == 1 else 's'} left\n"
    )
    return left == 0
