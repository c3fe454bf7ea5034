"""Network boot on loopback: download throughput of netboot's client against curl, from the same server, and the
time from `netboot run URL -n 1` to the first token (cold, and from the cache).

    python benchmarks/bench_client.py [--runs 5] [--model PATH] [--connections 4]

Servers: nginx (a generated config in a temp dir, sendfile on) and, when it exists, `netboot serve`; then nginx
limiting each connection to 50 MB/s, where parallel ranged connections fill what one cannot. For each,
every run downloads the whole model into a fresh place: curl (`curl -o FILE`), the client in-process (the
`netboot.remote.fetch.pull` call: catalog probe, transfer, sha256, rename into the cache), and the `netboot pull`
command (the same plus Python's start-up). Reported: medians in MB/s (1 MB = 10^6 bytes) and client/curl.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from processes import free_port, start_netboot_serve, wait_listening


def start_nginx(root: Path, tmp: Path, limit_rate: str | None = None) -> tuple[subprocess.Popen, str]:
    exe = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    (tmp / "t").mkdir(parents=True)
    user = "user root root;\n" if os.geteuid() == 0 else ""
    conf = tmp / "nginx.conf"
    conf.write_text(f"""{user}daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/t; proxy_temp_path {tmp}/t; fastcgi_temp_path {tmp}/t;
    uwsgi_temp_path {tmp}/t; scgi_temp_path {tmp}/t;
    default_type application/octet-stream;
    sendfile on;
    {f"limit_rate {limit_rate};" if limit_rate else ""}
    server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
""")
    proc = subprocess.Popen([exe, "-c", str(conf), "-p", str(tmp)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_listening(port, proc)
    return proc, f"http://127.0.0.1:{port}"


def curl_seconds(url: str, out: Path) -> float:
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    subprocess.run(["curl", "-s", "-f", "-o", str(out), url], check=True)
    seconds = time.perf_counter() - start
    out.unlink()
    return seconds


def client_seconds(url: str, cache: Path, connections: int) -> float:
    from netboot.formats.layout import ModelLayout
    from netboot.remote.fetch import FetchOptions, pull

    shutil.rmtree(cache, ignore_errors=True)
    start = time.perf_counter()
    pull(url, options=FetchOptions(cache_dir=cache, progress="off", connections=connections), layout=ModelLayout())
    seconds = time.perf_counter() - start
    shutil.rmtree(cache)
    return seconds


def command_seconds(url: str, cache: Path, connections: int) -> float:
    shutil.rmtree(cache, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "netboot", "pull", url, "--cache-dir", str(cache), "--connections",
                    str(connections)], check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    shutil.rmtree(cache)
    return seconds


def first_token_seconds(model: str, cache: Path | None, extra: tuple[str, ...] = ()) -> float:
    """Wall time from starting `netboot run MODEL -n 1` to the first byte of generated text on stdout."""
    cmd = [sys.executable, "-m", "netboot", "run", model, "-p", "The capital of France is", "-n", "1",
           "--temperature", "0", *extra]
    if cache is not None:
        cmd += ["--cache-dir", str(cache)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    proc.stdout.read(1)
    seconds = time.perf_counter() - start
    proc.stdout.read()
    if proc.wait() != 0:
        raise RuntimeError(f"{cmd} failed")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--model", default=None, help="the file to serve (default: the default model)")
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    if args.model:
        model = Path(args.model).resolve()
    else:
        from netboot.default_model import default_model_path

        model = default_model_path()
    size = model.stat().st_size
    print(f"file: {model.name}, {size / 1e6:.1f} MB; {args.runs} runs each, medians; loopback; "
          f"{os.cpu_count()} CPUs", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-client-"))
    servers: list[tuple[str, subprocess.Popen, str]] = []
    try:
        nginx, origin = start_nginx(model.parent, tmp / "nginx")
        servers.append(("nginx", nginx, origin))
        servers.append(("netboot serve", *start_netboot_serve(model.parent)))
        rows = []
        for name, _, origin in servers:
            url = f"{origin}/{model.name}"
            times: dict[str, list[float]] = {"curl": [], "client": [], "client-1conn": [], "command": []}
            curl_seconds(url, tmp / "warm.bin")  # the served file into the page cache
            for _ in range(args.runs):
                times["curl"].append(curl_seconds(url, tmp / "curl.bin"))
                times["client"].append(client_seconds(url, tmp / "cache", args.connections))
                times["client-1conn"].append(client_seconds(url, tmp / "cache", 1))
                times["command"].append(command_seconds(url, tmp / "cache", args.connections))
            med = {k: size / statistics.median(v) / 1e6 for k, v in times.items()}
            rows.append((name, med))
            print(f"\n[{name}] {url}")
            print(f"  curl -o FILE                             {med['curl']:8.0f} MB/s")
            print(f"  client, {args.connections} connections (in-process pull) {med['client']:8.0f} MB/s  "
                  f"= {med['client'] / med['curl']:.2f}x curl")
            print(f"  client, 1 connection  (in-process pull) {med['client-1conn']:8.0f} MB/s  "
                  f"= {med['client-1conn'] / med['curl']:.2f}x curl")
            print(f"  netboot pull (whole command)            {med['command']:8.0f} MB/s  "
                  f"= {med['command'] / med['curl']:.2f}x curl", flush=True)

        # A link one connection cannot fill: nginx limits each connection to 50 MB/s.
        limited, origin = start_nginx(model.parent, tmp / "nginx-limited", "50m")
        servers.append(("nginx, limit_rate 50m per connection", limited, origin))
        url = f"{origin}/{model.name}"
        runs = max(1, min(3, args.runs))
        curl = statistics.median(curl_seconds(url, tmp / "curl.bin") for _ in range(runs))
        client = statistics.median(client_seconds(url, tmp / "cache", args.connections) for _ in range(runs))
        print(f"\n[nginx, limit_rate 50m per connection] {runs} runs")
        print(f"  curl -o FILE                             {size / curl / 1e6:8.0f} MB/s")
        print(f"  client, {args.connections} connections (in-process pull) {size / client / 1e6:8.0f} MB/s  "
              f"= {curl / client:.2f}x curl", flush=True)

        name, _, origin = servers[0]
        url = f"{origin}/{model.name}"
        cold, warm, local = [], [], []
        for _ in range(max(3, args.runs // 2)):
            cache = tmp / "ttft"
            shutil.rmtree(cache, ignore_errors=True)
            cold.append(first_token_seconds(url, cache))
            warm.append(first_token_seconds(url, cache))
            local.append(first_token_seconds(str(model), None))
        shutil.rmtree(tmp / "ttft", ignore_errors=True)
        print(f"\ntime to first token, `netboot run URL -n 1` ({name}), medians:")
        print(f"  cold (download {size / 1e6:.0f} MB, then run)  {statistics.median(cold):6.2f} s")
        print(f"  from the cache (304)                  {statistics.median(warm):6.2f} s")
        print(f"  local path, for reference             {statistics.median(local):6.2f} s")
    finally:
        for _, proc, _ in servers:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
