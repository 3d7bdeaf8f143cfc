"""Load on `nlpfw serve`: requests/s, texts/s, latency percentiles, errors and the server's memory
at several concurrency levels, with micro-batching on and off.

The server is started on 127.0.0.1 (a free port) from a run folder; a bounded asynchronous
httpx client keeps `concurrency` requests in flight for a fixed time, each request one CLUENER
dev text (cycling through the split), and counts what comes back. The server's resident memory
is sampled from /proc every 0.2 s; its peak (VmHWM) is read at the end. Client and server share
the machine's cores.

    flock /tmp/nlpfw-cpu.lock .venv/bin/python benchmarks/serve_load.py runs/quickstart
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def server(run_dir: Path, options: list[str]):
    import httpx

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "nlpfw", "serve", str(run_dir), "--port", str(port), *options],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise SystemExit(f"the server exited: {process.stderr.read()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("the server did not start in 120 s")
            time.sleep(0.2)
        yield base, process.pid
    finally:
        process.terminate()
        process.wait(60)


async def load(base: str, pid: int, texts: list[str], concurrency: int, seconds: float, per_request: int) -> dict:
    import httpx

    batches = itertools.cycle(range(0, len(texts) - per_request + 1, per_request))
    latencies: list[float] = []
    errors = 0
    samples = [memory(pid)["VmRSS"]]
    stop = time.monotonic() + seconds
    limit = int(seconds * 5000)  # a bound on the requests, whatever the speed

    async def worker() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=30, limits=httpx.Limits(max_connections=1)) as client:
            await requests(client)

    async def requests(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.monotonic() < stop and len(latencies) + errors < limit:
            begin = next(batches)
            start = time.perf_counter()
            try:
                response = await client.post("/predict", json={"texts": texts[begin : begin + per_request]})
                ok = response.status_code == 200 and len(response.json()) == per_request
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - start)
            else:
                errors += 1

    async def sample() -> None:
        while time.monotonic() < stop:
            await asyncio.sleep(0.2)
            samples.append(memory(pid)["VmRSS"])

    # one keep-alive connection per worker: a shared httpx pool of 32 costs the client more CPU
    # per request than the server spends (measured: 4.0 against 3.8 ms)
    began, server_cpu, client_cpu = time.perf_counter(), cpu_seconds(pid), time.process_time()
    await asyncio.gather(sample(), *(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    server_cpu, client_cpu = cpu_seconds(pid) - server_cpu, time.process_time() - client_cpu
    p50, p95, p99 = np.percentile(np.asarray(latencies) * 1000, [50, 95, 99]) if latencies else (0, 0, 0)
    return {
        "concurrency": concurrency, "requests_s": len(latencies) / elapsed,
        "texts_s": len(latencies) * per_request / elapsed, "p50": p50, "p95": p95, "p99": p99, "errors": errors,
        "rss_start": samples[0], "rss_end": samples[-1], "rss_max": max(samples),
        "rss_every_10s": samples[::50] + [samples[-1]],
        "server_cpu_ms": 1000 * server_cpu / max(len(latencies), 1), "client_cpu_ms": 1000 * client_cpu / max(len(latencies), 1),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=10.0, help="per concurrency level")
    parser.add_argument("--texts-per-request", type=int, default=1)
    parser.add_argument("--modes", nargs="+", choices=["on", "off"], default=["on", "off"], help="micro-batching")
    parser.add_argument("--soak", type=float, default=0.0,
                        help="then this many seconds more at the highest concurrency, printing the server's memory")  # fmt: skip
    parser.add_argument("--server-option", action="append", default=[], help="passed to nlpfw serve (repeatable)")
    args = parser.parse_args()
    _common.header("nlpfw serve under load: micro-batching on and off")
    print(f"CPU: {_common.cpu_class()}")
    from nlpfw_plugins.cluener import Cluener, CluenerConfig

    texts = [e.text for e in Cluener(CluenerConfig(), _common.data_root()).load("dev")]
    print(f"{args.run_dir}; {len(texts)} CLUENER dev texts (mean {np.mean([len(t) for t in texts]):.1f} characters), "
          f"{args.texts_per_request} a request, {args.seconds:.0f} s a level, {os.cpu_count()} cores shared by "
          "client and server")  # fmt: skip
    header = (f"{'batching':9} {'conc.':>5} {'req/s':>7} {'texts/s':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
              f"{'errors':>6} {'RSS start→end MiB':>18} {'max':>6} {'CPU ms/req server':>17} {'client':>6}")  # fmt: skip
    results = {}
    for mode, options in (("on", []), ("off", ["--no-batching"])):
        if mode not in args.modes:
            continue
        with server(args.run_dir, [*options, *args.server_option]) as (base, pid):
            asyncio.run(load(base, pid, texts, 4, 2.0, args.texts_per_request))  # warm-up
            rows = [asyncio.run(load(base, pid, texts, c, args.seconds, args.texts_per_request))
                    for c in args.concurrency]  # fmt: skip
            if args.soak:
                soak = asyncio.run(load(base, pid, texts, args.concurrency[-1], args.soak, args.texts_per_request))
                print(f"\nmicro-batching {mode}, {args.soak:.0f} s more at concurrency {args.concurrency[-1]}: "
                      f"{soak['requests_s']:.1f} req/s, {soak['errors']} errors, server RSS every 10 s (MiB): "
                      + " ".join(f"{m:.0f}" for m in soak["rss_every_10s"]))  # fmt: skip
            peak = memory(pid)["VmHWM"]
        results[mode] = rows
        print(f"\nmicro-batching {mode}: server peak memory (VmHWM) {peak:.0f} MiB")
        print(header)
        for r in rows:
            print(f"{mode:9} {r['concurrency']:5} {r['requests_s']:7.1f} {r['texts_s']:8.1f} {r['p50']:7.1f} "
                  f"{r['p95']:7.1f} {r['p99']:7.1f} {r['errors']:6} {r['rss_start']:8.0f} → {r['rss_end']:6.0f} "
                  f"{r['rss_max']:6.0f} {r['server_cpu_ms']:17.2f} {r['client_cpu_ms']:6.2f}")  # fmt: skip
    print()
    for mode, rows in results.items():
        first, last = rows[0], rows[-1]
        print(f"micro-batching {mode}: concurrency {last['concurrency']} / {first['concurrency']}: "
              f"{last['requests_s'] / first['requests_s']:.2f}x the requests/s")  # fmt: skip
    print(json.dumps({mode: [{k: v for k, v in r.items() if k != "rss_every_10s"} for r in rows]
                      for mode, rows in results.items()}))


if __name__ == "__main__":
    main()
