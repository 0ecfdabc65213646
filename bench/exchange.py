"""Exchange benchmark: the upstream directly, nginx as an mTLS reverse proxy, two bare Python mTLS proxies (aiohttp's
stack, and the node's own server and upstream client), and the gateway's full path.

All in one run on this machine, each server with one worker process (nginx's beside its master, the gateway's
beside its SQLite log-writer process), the same load generator, the same requests (Progress API PUTs, one per
connection, each about a student of its own; the gateway's with an access token fetched for each run). Prints
successful requests/s, p50/p99 latency, each server's CPU per request (all its processes) and the load generator's
own, the gateway/nginx throughput ratio, the gateway's peak RSS, and for the gateway's and nginx's median rounds where
their threads spent the time: on a CPU, runnable but waiting for one (the load generator and the upstream share the
machine), or idle, and how busy the machine's cores were meanwhile; and the event loop's ceiling, the ratio one core
of its own would give at the CPU it spent per exchange.

    .venv/bin/python bench/exchange.py [--seconds 10] [--connections 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).parent))
from loadgen import Result, build_request, run

from connectors.samples.publisher import progress_record
from trust.eckid import ECK_ID_PREFIX
from trust.pki import load_issued
from trust.tokens import make_client_assertion

SCHOOL = "104A158"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def nginx_config(work: Path, port: int, upstream_port: int, ready: dict[str, str]) -> Path:
    conf = work / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {work}/nginx-body;
    proxy_temp_path {work}/nginx-proxy;
    fastcgi_temp_path {work}/nginx-fastcgi;
    uwsgi_temp_path {work}/nginx-uwsgi;
    scgi_temp_path {work}/nginx-scgi;
    keepalive_requests 1000000;
    upstream dashboard {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {ready["server_cert"]};
        ssl_certificate_key {ready["server_key"]};
        ssl_client_certificate {ready["ca"]};
        ssl_verify_client on;
        location / {{
            proxy_pass http://dashboard;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "";
            proxy_set_header X-Client-Subject $ssl_client_s_dn;
        }}
    }}
}}
""")
    return conf


def wait_ready(directory: Path, process: subprocess.Popen[bytes], what: str) -> dict[str, Any]:
    """The `ready.json` a node process (`connectors.samples.node_process`) writes into `directory` once it serves."""
    deadline = time.time() + 60
    while not (directory / "ready.json").exists():
        if time.time() > deadline or process.poll() is not None:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.2)
    ready: dict[str, Any] = json.loads((directory / "ready.json").read_text())  # the port a number, the rest text
    return ready


def start_upstream(procs: list[subprocess.Popen[bytes]]) -> tuple[int, int]:
    """The sample dashboard (the Progress API) on a free port, added to `procs` once it listens: its port and pid."""
    port = free_port()
    procs.append(subprocess.Popen([sys.executable, "-m", "connectors.samples.dashboard", str(port)]))
    wait_port(port)
    return port, procs[-1].pid


def start_nginx(work: Path, port: int, upstream_port: int, ready: dict[str, str],
                procs: list[subprocess.Popen[bytes]]) -> int:
    """nginx as the mTLS reverse proxy in front of the upstream, with the node's server certificate and CA (`ready`),
    added to `procs` once it listens: its master's process id."""
    (work / "nginx-body").mkdir()
    conf = nginx_config(work, port, upstream_port, ready)
    procs.append(subprocess.Popen(["nginx", "-c", str(conf), "-e", str(work / "nginx-error.log")]))
    wait_port(port)
    return procs[-1].pid


def _stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def child_pids(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat_fields(int(entry.name))[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError):
                continue
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) of `pid` and of every process under it, running now: the gateway's
    log-writer process, nginx's worker under its master."""
    ticks, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = _stat_fields(current)
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
        todo += child_pids(current)
    return ticks / os.sysconf("SC_CLK_TCK")


def written(pid: int | str) -> tuple[int, int]:
    """The bytes a process (`"self"` for this one) has written so far and its write calls (`/proc/PID/io` wchar
    and syscw): what its pages cost the kernel, which its instructions do not count."""
    fields = dict(line.split(":") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return int(fields["wchar"]), int(fields["syscw"])


Threads = dict[tuple[int, int], tuple[int, int]]


def thread_schedule(pid: int) -> Threads:
    """For every thread of `pid` and of the processes directly under it, keyed (process id, thread id): nanoseconds
    on a CPU and nanoseconds runnable but waiting for one (`/proc/PID/task/TID/schedstat`). Empty where the kernel
    keeps no schedstat."""
    found = {}
    for process in (pid, *child_pids(pid)):
        try:
            threads = list(Path(f"/proc/{process}/task").iterdir())
        except OSError:
            continue
        for thread in threads:
            try:
                on_cpu, waiting, _ = Path(thread, "schedstat").read_text().split()
            except (OSError, ValueError):
                continue
            found[(process, int(thread.name))] = (int(on_cpu), int(waiting))
    return found


@dataclass
class ThreadTime:
    """What one thread of the gateway did during a measured run: seconds on a CPU, and runnable but waiting."""

    label: str
    on_cpu: float
    waiting: float


def server_threads(pid: int, before: Threads, after: Threads, names: tuple[str, str]) -> list[ThreadTime]:
    """A server's threads that ran for more than a trifle between two readings, named after `names`: what the
    process itself is, and what the processes under it are (the gateway: its worker's event loop and its log-writer
    process; nginx: its master and its worker)."""
    found = []
    for key, (on_cpu, waiting) in after.items():
        if key not in before:
            continue
        process, thread = key
        owner = names[0] if process == pid else names[1]
        label = owner if thread == process else f"{owner}, thread {thread}"  # a process's main thread, or another
        found.append(ThreadTime(label, (on_cpu - before[key][0]) / 1e9, (waiting - before[key][1]) / 1e9))
    return [t for t in found if t.on_cpu > 0.01]


MACHINE_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def machine_ticks() -> list[int]:
    """The machine's CPU time so far, all cores, in the fields of MACHINE_FIELDS (`/proc/stat`)."""
    return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1 : 1 + len(MACHINE_FIELDS)]]


def machine_use(before: list[int], after: list[int]) -> str:
    """How the machine's cores spent a run: busy (user, system, interrupts), idle (with I/O wait), stolen by the
    hypervisor. A server waiting for a core while a core idles is the scheduler's placement, not a full machine."""
    spent = dict(zip(MACHINE_FIELDS, (b - a for a, b in zip(before, after, strict=True)), strict=True))
    total = sum(spent.values()) or 1
    busy = spent["user"] + spent["nice"] + spent["system"] + spent["irq"] + spent["softirq"]
    return (
        f"the machine's cores: busy {busy / total:.0%} (softirq {spent['softirq'] / total:.0%}),"
        f" idle {(spent['idle'] + spent['iowait']) / total:.0%}, stolen {spent['steal'] / total:.0%}"
    )


def schedule_rows(runs: list[tuple[list[ThreadTime], Result]]) -> list[str]:
    """A row per thread of each run: its CPU and its wait for a core per request, and its shares of the run."""
    rows = [f"{'thread':<34}{'CPU us/req':>12}{'wait us/req':>12}{'on a CPU':>10}{'waiting':>10}{'neither':>10}"]
    for t, result in ((t, result) for threads, result in runs for t in threads):
        on, wait = t.on_cpu / result.seconds, t.waiting / result.seconds
        rows.append(
            f"{t.label:<34}{t.on_cpu / result.requests * 1e6:>12.0f}{t.waiting / result.requests * 1e6:>12.0f}"
            f"{on:>10.0%}{wait:>10.0%}{max(0.0, 1 - on - wait):>10.0%}"
        )
    return rows


def stop(procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
    """SIGTERM to every process, then wait for each, killing what has not ended within `timeout` seconds."""
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def publisher_tls(ready: dict[str, str]) -> ssl.SSLContext:
    """The benchmark publisher's mTLS client context: its certificate, trusting the demo federation's CA."""
    context = ssl.create_default_context(cafile=ready["ca"])
    context.load_cert_chain(ready["cert"], ready["key"])
    return context


def student(n: int) -> str:
    """The n-th benchmark student's ECK iD: 128 hex characters as a real one has them (digits and letters mixed,
    which the scan for direct identifiers reads), the same in every run."""
    return ECK_ID_PREFIX + hashlib.sha512(f"benchmark student {n}".encode()).hexdigest()


def progress_puts(token: str | None, count: int) -> list[bytes]:
    """The requests every target gets: `count` Progress API PUTs (one per connection), each of a record about a
    student of its own, with the bearer token when given. So the log indexes as many students as there are
    connections, and the attribute check reads realistic ECK iDs."""
    requests = []
    for n in range(count):
        record_id = str(uuid.UUID(bytes=hashlib.sha256(f"benchmark record {n}".encode()).digest()[:16], version=4))
        body = json.dumps(progress_record(record_id=record_id, eck_id=student(n), school=SCHOOL)).encode()
        headers = {"Content-Type": "application/json", "Edu-Purpose": "b"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        requests.append(build_request("PUT", f"/v1/progress/{record_id}", "127.0.0.1", headers, body))
    return requests


async def get_token(port: int, ready: dict[str, str]) -> str:
    import aiohttp

    identity = load_issued(Path(ready["cert"]), Path(ready["key"]))
    context = publisher_tls(ready)
    base = f"https://127.0.0.1:{port}"
    assertion = make_client_assertion(
        client_id=ready["client_id"], audience=base + "/oauth2/token", key=identity.key, kid="cert"
    )
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
        session.post(
            base + "/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "scope": "progress",
                "purpose": "b",
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": assertion,
            },
        ) as response,
    ):
        body = await response.json()
        if response.status != 200:
            raise RuntimeError(f"token refused: {body}")
        return str(body["access_token"])


def row(name: str, result: Result) -> str:
    ok = result.ok
    cpu_us = result.server_cpu / result.requests * 1e6 if result.requests else float("nan")
    client_us = result.client_cpu / result.requests * 1e6 if result.requests else float("nan")
    return (
        f"{name:<34}{result.rps:>10.0f}{result.percentile(50):>10.2f}{result.percentile(99):>10.2f}"
        f"{ok:>10}{result.requests - ok + result.errors:>8}{cpu_us:>12.0f}{client_us:>12.0f}"
    )


GATEWAY_NAMES = ("worker (event loop)", "log writer process")
NGINX_NAMES = ("nginx master", "nginx worker")


def loop_ceiling(threads: list[ThreadTime], gateway: Result, nginx: Result) -> str:
    """What one core could give the gateway at the CPU its event loop spent per exchange, set against nginx's
    figure and the gateway's own: how much of the gap is the loop's work, and how much the machine's sharing."""
    loop = next((t for t in threads if t.label == GATEWAY_NAMES[0]), None)
    if loop is None or not gateway.requests or not loop.on_cpu:
        return ""
    ceiling = gateway.requests / loop.on_cpu  # exchanges per second of the loop's own CPU
    return (
        f"the event loop's ceiling: a core of its own at {loop.on_cpu / gateway.requests * 1e6:.0f} us of CPU per"
        f" exchange gives {ceiling:.0f} req/s, gateway/nginx {ceiling / nginx.rps if nginx.rps else 0.0:.2f};"
        f" measured: {gateway.rps / ceiling:.0%} of that ceiling"
    )


def ratio(results: dict[str, list[Result]], i: int) -> float:
    nginx = results["nginx mTLS reverse proxy"][i].rps
    return results["edugate full path"][i].rps / nginx if nginx else 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--rounds", type=int, default=3, help="measure every target this many times, interleaved; the median counts"
    )
    args = parser.parse_args()
    if not shutil.which("nginx"):
        sys.exit("nginx is not installed: apt-get install nginx-light")

    work = Path(tempfile.mkdtemp(prefix="edugate-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        upstream_port, upstream_pid = start_upstream(procs)
        nginx_port = free_port()
        node = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "connectors.samples.node_process",
                str(work / "fed"),
                f"http://127.0.0.1:{upstream_port}",
            ]
        )
        procs.append(node)
        ready = wait_ready(work / "fed", node, "the gateway node")
        nginx_pid = start_nginx(work, nginx_port, upstream_port, ready, procs)

        def floor_proxy(script: str) -> tuple[int, int]:
            """One of the bare mTLS proxies (bench/bare_proxy.py, bench/floor_proxy.py) in front of the upstream:
            its port and process id."""
            port = free_port()
            arguments = [f"http://127.0.0.1:{upstream_port}", ready["server_cert"], ready["server_key"], ready["ca"]]
            procs.append(subprocess.Popen([sys.executable, script, str(port), *arguments]))
            wait_port(port)
            return port, procs[-1].pid

        bare_port, bare_pid = floor_proxy("bench/bare_proxy.py")
        floor_port, floor_pid = floor_proxy("bench/floor_proxy.py")

        mtls = publisher_tls(ready)
        plain = progress_puts(None, args.connections)
        schedules: dict[int, list[ThreadTime]] = {}  # per result (by id) of the gateway and of nginx: threads' time
        machine: dict[int, str] = {}  # per result (by id) of every target: how busy the machine's cores were

        def with_token() -> list[bytes]:
            """The gateway's requests with a token fetched now: an access token lives at most 300 s, less than a
            run of seven rounds takes."""
            return progress_puts(asyncio.run(get_token(ready["port"], ready)), args.connections)

        def measure(
            port: int, context: ssl.SSLContext | None, make_requests: Callable[[], list[bytes]], pid: int
        ) -> Result:
            """The load generator's result, with the CPU seconds the server (all its processes) spent meanwhile:
            after a warm-up of its own, so that the CPU counted is that of the requests counted."""
            requests = make_requests()

            def load(seconds: float) -> Result:
                return uvloop.run(  # asyncio's own loop costs the load generator enough CPU to cap nginx's figure
                    run("127.0.0.1", port, context, requests, connections=args.connections, seconds=seconds, warmup=0)
                )

            load(1.0)
            before, threads_before, ticks_before = tree_cpu_seconds(pid), thread_schedule(pid), machine_ticks()
            client_before = time.process_time()
            result = load(args.seconds)
            result.client_cpu = time.process_time() - client_before
            result.server_cpu = tree_cpu_seconds(pid) - before
            machine[id(result)] = machine_use(ticks_before, machine_ticks())
            names = {node.pid: GATEWAY_NAMES, nginx_pid: NGINX_NAMES}.get(pid)
            if names:
                schedules[id(result)] = server_threads(pid, threads_before, thread_schedule(pid), names)
            return result

        # (port, TLS context, the requests (made for each run), the server's process: its CPU counts with all its
        # children's)
        targets = {
            "upstream directly (plain HTTP)": (upstream_port, None, lambda: plain, upstream_pid),
            "nginx mTLS reverse proxy": (nginx_port, mtls, lambda: plain, nginx_pid),
            "bare aiohttp mTLS proxy (uvloop)": (bare_port, mtls, lambda: plain, bare_pid),
            "edugate's HTTP stack, no checks/log": (floor_port, mtls, lambda: plain, floor_pid),
            "edugate full path": (ready["port"], mtls, with_token, node.pid),
        }
        # Rounds interleave the targets, so a slow spell of this shared machine hits them all alike.
        results: dict[str, list[Result]] = {name: [] for name in targets}
        for _ in range(args.rounds):
            for name, target in targets.items():
                results[name].append(measure(*target))
        rss = peak_rss_kib(node.pid)
        writer_rss = ", ".join(f"{peak_rss_kib(pid) / 1024:.1f} MiB" for pid in child_pids(node.pid)) or "none"
        if args.rounds > 1:
            print(f"\nper round, gateway/nginx: {', '.join(f'{ratio(results, i):.2f}' for i in range(args.rounds))}")
            for name in ("nginx mTLS reverse proxy", "edugate full path"):
                print(f"per round, {name} req/s: {', '.join(f'{r.rps:.0f}' for r in results[name])}")
        for name, runs in results.items():
            for i, r in enumerate(runs):
                if r.statuses.keys() - {200, 201} or r.errors:  # a PUT's answers are 200 or 201; anything else is told
                    print(
                        f"round {i + 1}, {name}: statuses {dict(sorted(r.statuses.items()))},"
                        f" {r.requests - r.ok} refused, {r.errors} broken connections"
                    )
        chosen = {name: sorted(runs, key=lambda r: r.rps)[len(runs) // 2] for name, runs in results.items()}
        nginx, bare, floor, gateway = (
            chosen["nginx mTLS reverse proxy"],
            chosen["bare aiohttp mTLS proxy (uvloop)"],
            chosen["edugate's HTTP stack, no checks/log"],
            chosen["edugate full path"],
        )

        print(
            f"\nPUT /v1/progress/{{id}}, {args.connections} keep-alive connections (a student each),"
            f" {args.seconds:g} s each, "
            f"one worker process per server, {os.cpu_count()} cores"
            + (f", median of {args.rounds} interleaved rounds" if args.rounds > 1 else "")
            + "\n"
        )
        print(
            f"{'target':<34}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'ok':>10}{'errors':>8}{'CPU us/req':>12}"
            f"{'load us/req':>12}"
        )
        for name, result in chosen.items():
            print(row(name, result))
        headline = f"\ngateway/nginx throughput ratio: {gateway.rps / nginx.rps if nginx.rps else 0.0:.2f}"
        if args.rounds > 1:  # a round compares runs made seconds apart; on a noisy machine the two figures differ
            paired = sorted(ratio(results, i) for i in range(args.rounds))
            headline += f" (of the medians; the median of the rounds' own ratios: {paired[len(paired) // 2]:.2f})"
        print(headline)
        print(f"gateway/bare aiohttp proxy ratio: {gateway.rps / bare.rps if bare.rps else 0.0:.2f}")
        print(f"gateway/its own HTTP stack without checks and log: {gateway.rps / floor.rps if floor.rps else 0.0:.2f}")
        print(f"gateway peak RSS: {rss / 1024:.1f} MiB (its worker process; the log writer's own: {writer_rss})")
        print(
            "(edugate full path = mTLS + certificate + register + token + keurmerk + activation + purpose +"
            " attribute checks + durable log record before forwarding + outcome record)"
        )
        print(
            "(req/s: answers with a success per second; CPU us/req: user + system time of the server's processes per"
            " request answered: nginx's master and worker; the gateway's worker and its SQLite log-writer process;"
            " load us/req: the load generator's own, which shares the machine's cores with the servers)"
        )
        if schedules.get(id(gateway)):
            print(
                "\nthe gateway's and nginx's threads in the rounds shown above (/proc/PID/task/TID/schedstat; waiting:"
                " runnable, but not on a core; neither: idle, waiting for input: the network, the log writer's answer,"
                " the next batch):"
            )
            print("\n".join(schedule_rows([(schedules[id(gateway)], gateway), (schedules.get(id(nginx), []), nginx)])))
            ceiling = loop_ceiling(schedules[id(gateway)], gateway, nginx)
            if ceiling:
                print(ceiling)
            print(f"gateway's round: {machine[id(gateway)]}; nginx's round: {machine[id(nginx)]}")
    finally:
        stop(procs, timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
