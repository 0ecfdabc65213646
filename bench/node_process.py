"""Run the demo federation's gateway node in its own process (one worker) for the benchmark.

Usage: python bench/node_process.py DIRECTORY UPSTREAM_URL
Writes DIRECTORY/ready.json (port, the publisher's certificate and key files, the CA) and serves until killed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from connectors.samples.federation import Federation


async def main(directory: Path, upstream: str) -> None:
    fed = Federation(directory)
    await fed.start(upstream=upstream)
    await fed.activate_demo_schools()
    publisher = fed.parties["publisher"]
    cert, key = publisher.identity.write(directory, "bench-publisher")
    (directory / "ca.pem").write_bytes(fed.ca.cert_pem())
    assert fed.served is not None
    (directory / "ready.json").write_text(
        json.dumps(
            {
                "port": fed.served.port,
                "cert": str(cert),
                "key": str(key),
                "ca": str(directory / "ca.pem"),
                "server_cert": str(directory / "node-server.pem"),
                "server_key": str(directory / "node-server.key"),
                "client_id": publisher.client_id,
            }
        )
    )
    await asyncio.Event().wait()


if __name__ == "__main__":
    import logging

    logging.disable(logging.CRITICAL)
    from gateway.cli import configure_logging

    configure_logging("error")
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))
