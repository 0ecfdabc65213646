"""Attribute minimisation cost: parse + cut + identifier search + serialise, against parse + serialise alone.

The baseline is what any JSON-inspecting gateway pays (json.loads and json.dumps of the same body), measured in
the same run; the figure that matters is the ratio, and the absolute time per body.

    .venv/bin/python bench/minimisation.py [--rounds 20000] [--records 1000]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

from gateway.catalogue import load_catalogue
from gateway.minimisation import Allowlist

ROOT = Path(__file__).resolve().parents[1]
ECK_ID = "https://ketenid.nl/201703/" + "a1" * 64


def timed(work: Callable[[], object], rounds: int) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(rounds):
            work()
        best = min(best, (time.perf_counter() - started) / rounds)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20000)
    parser.add_argument("--records", type=int, default=1000)
    args = parser.parse_args()
    catalogue = load_catalogue(ROOT / "config" / "catalogue.toml")

    progress = Allowlist(catalogue.services["leermateriaalgebruik"].attributes["progress"])
    body = json.dumps({
        "id": "0b6f3a52-8f0e-4a4c-9d43-5a1f2f1f6b11", "student": {"id": ECK_ID},
        "school": {"organisationMasterIdentifier": "104A158"}, "assignableUnitId": "unit-7",
        "courseId": "rekenen-groep-6", "status": "completed", "pleaseFollowUp": False,
        "additionalInfo": "Lesson 7 done in one go", "detailUrl": "https://publisher.test/progress/0b6f3a52",
    }).encode()  # fmt: skip
    usage = Allowlist(catalogue.services["gebruiksoverzicht"].attributes["eduv.usage"])
    report = json.dumps({
        "school": "104A158", "since": "2026-01-01T00:00:00Z",
        "records": [
            {"student": {"id": ECK_ID}, "courseId": "c", "assignableUnitId": "u", "status": "started",
             "updatedAt": "2026-01-01T00:00:00Z", "internalScore": 17}
            for _ in range(args.records)
        ],
    }).encode()  # fmt: skip

    cases = [
        ("progress push body (refuse mode)", body, progress, True, args.rounds),
        (f"usage answer, {args.records} records (remove mode)", report, usage, False, max(10, args.rounds // 1000)),
    ]
    for title, raw, allowlist, refuse, rounds in cases:
        baseline = timed(lambda raw=raw: json.dumps(json.loads(raw)), rounds)
        filtered = timed(
            lambda raw=raw, allowlist=allowlist, refuse=refuse: json.dumps(
                allowlist.minimise(json.loads(raw), refuse_extra=refuse).payload
            ),
            rounds,
        )
        print(
            f"{title}: parse+serialise {baseline * 1e6:.1f} us, with minimisation {filtered * 1e6:.1f} us "
            f"(x{filtered / baseline:.1f}, +{(filtered - baseline) * 1e6:.1f} us)"
        )


if __name__ == "__main__":
    main()
