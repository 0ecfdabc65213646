"""Run the demo federation's gateway node in a process of its own (for the benchmark and the crash tests).

    python -m connectors.samples.node_process DIRECTORY UPSTREAM_URL [--log-dsn DSN]

Writes DIRECTORY/ready.json (port, the publisher's certificate and key, the CA, the log's location) once the
node serves, and serves until it is killed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from connectors.samples.federation import Federation
from gateway.cli import settle_heap


async def main(directory: Path, upstream: str, log_dsn: str | None = None) -> None:
    fed = Federation(directory, log_dsn=log_dsn)
    await fed.start(upstream=upstream)
    await fed.activate_demo_schools()
    publisher = fed.parties["publisher"]
    cert, key = publisher.identity.write(directory, "bench-publisher")
    (directory / "ca.pem").write_bytes(fed.ca.cert_pem())
    assert fed.served is not None and fed.node is not None
    ready = {
        "port": fed.served.port,
        "cert": str(cert),
        "key": str(key),
        "ca": str(directory / "ca.pem"),
        "server_cert": str(directory / "node-server.pem"),
        "server_key": str(directory / "node-server.key"),
        "client_id": publisher.client_id,
        "config": str(directory / "node.toml"),
        "node_oin": fed.node.oin,
    }
    (directory / "ready.json.tmp").write_text(json.dumps(ready))
    (directory / "ready.json.tmp").rename(directory / "ready.json")
    settle_heap()
    await asyncio.Event().wait()


if __name__ == "__main__":
    from gateway.cli import configure_logging, run_loop

    parser = argparse.ArgumentParser()
    parser.add_argument("directory", type=Path)
    parser.add_argument("upstream")
    parser.add_argument("--log-dsn")
    args = parser.parse_args()
    configure_logging("error")
    run_loop(main(args.directory, args.upstream, args.log_dsn))
