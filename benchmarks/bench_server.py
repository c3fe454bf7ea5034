"""`netboot serve` against nginx on loopback: download throughput of the default model, same directory, same client.

    python benchmarks/bench_server.py [--runs 15] [--parallel 8] [--pin] [--model PATH]

Both servers serve one temporary directory holding the model (a hard link, else a copy) on 127.0.0.1: `netboot
serve DIR --port 0`, and nginx started here as a foreground process (`daemon off; master_process off;`, a config
generated in a temp dir: sendfile on, access_log off). The client is curl (`-o /dev/null`). After one warm-up
download from each (the file is then in the page cache for both), every round downloads once from each server, in a
random order. Reported: the median MB/s (1 MB = 10^6 bytes) of single downloads, and of --parallel simultaneous
downloads (aggregate), and the ratio netboot / nginx (the goal is at least 0.8).

On loopback the sender and the receiver share the machine's CPUs, and where the scheduler puts them moves single
downloads by +-30% from one run to the next; --pin puts both servers on CPU 0 and curl on CPU 1 (taskset), as a
server and a client on two machines would be.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from processes import free_port, start_netboot_serve, stop, wait_listening

ROOT = Path(__file__).resolve().parent.parent


def start_nginx(exe: str, root: Path, tmp: Path, prefix: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    (tmp / "temp").mkdir(parents=True)
    conf = tmp / "nginx.conf"
    conf.write_text(f"""daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    client_body_temp_path {tmp}/temp; proxy_temp_path {tmp}/temp; fastcgi_temp_path {tmp}/temp;
    uwsgi_temp_path {tmp}/temp; scgi_temp_path {tmp}/temp;
    server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
""")
    proc = subprocess.Popen([*prefix, exe, "-c", str(conf), "-p", str(tmp)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_listening(port, proc)
    return proc, f"http://127.0.0.1:{port}"


def curl_once(curl: list[str], url: str) -> float:
    """MB/s of one download (curl's own timing: from the request to the last byte)."""
    out = subprocess.run([*curl, "-sS", "--fail", "-o", "/dev/null", "-w", "%{size_download} %{time_total}", url],
                         capture_output=True, text=True, check=True).stdout.split()
    size, seconds = int(out[0]), float(out[1])
    return size / seconds / 1e6


def curl_parallel(curl: list[str], url: str, n: int, size: int) -> float:
    """Aggregate MB/s of n simultaneous downloads (wall clock from the first start to the last end)."""
    began = time.perf_counter()
    procs = [subprocess.Popen([*curl, "-sS", "--fail", "-o", "/dev/null", url]) for _ in range(n)]
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(f"curl failed on {url}")
    return n * size / (time.perf_counter() - began) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--parallel", type=int, default=8, help="simultaneous downloads in the second test")
    parser.add_argument("--model", default=None, help="file to serve (default: the default model)")
    parser.add_argument("--pin", action="store_true", help="servers on CPU 0, curl on CPU 1 (needs taskset)")
    args = parser.parse_args()
    curl, nginx = shutil.which("curl"), shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if not curl or not nginx:
        raise SystemExit("needs curl and nginx (apt-get install curl nginx-light)")
    if args.model:
        model = Path(args.model)
    else:
        sys.path.insert(0, str(ROOT))
        from netboot.default_model import default_model_path

        model = default_model_path()
    size = model.stat().st_size
    taskset = shutil.which("taskset")
    if args.pin and (not taskset or (os.cpu_count() or 1) < 2):
        raise SystemExit("--pin needs taskset and two CPUs")
    server_prefix = [taskset, "-c", "0"] if args.pin else []
    client = [taskset, "-c", "1", curl] if args.pin else [curl]
    version = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip().split("/")[-1]

    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp_name:
        tmp = Path(tmp_name)
        www = tmp / "www"
        www.mkdir()
        try:
            os.link(model, www / model.name)
        except OSError:
            shutil.copyfile(model, www / model.name)
        servers = []
        try:
            servers.append(("netboot serve", *start_netboot_serve(www, server_prefix)))
            servers.append((f"nginx {version}", *start_nginx(nginx, www, tmp / "nginx", server_prefix)))
            single: dict[str, list[float]] = {name: [] for name, _, _ in servers}
            multi: dict[str, list[float]] = {name: [] for name, _, _ in servers}
            for _, _, origin in servers:
                curl_once(client, f"{origin}/{model.name}")  # warm-up
            for _ in range(args.runs):
                for name, _, origin in random.sample(servers, len(servers)):
                    single[name].append(curl_once(client, f"{origin}/{model.name}"))
            for _ in range(max(1, args.runs // 3)):
                for name, _, origin in random.sample(servers, len(servers)):
                    multi[name].append(curl_parallel(client, f"{origin}/{model.name}", args.parallel, size))
        finally:
            for _, proc, _ in servers:
                stop(proc)

    pinned = "; servers on CPU 0, curl on CPU 1" if args.pin else ""
    print(f"{model.name}: {size / 1e6:.1f} MB on 127.0.0.1, client curl -o /dev/null{pinned}; "
          f"{args.runs} rounds in random order (medians; MB = 10^6 bytes)")
    print(f"{'server':<16} {'1 download MB/s':>16} {f'{args.parallel} at once MB/s':>18}")
    for name, _, _ in servers:
        print(f"{name:<16} {statistics.median(single[name]):>16.0f} {statistics.median(multi[name]):>18.0f}")
    ours, theirs = (statistics.median(single[name]) for name, _, _ in servers)
    ours_p, theirs_p = (statistics.median(multi[name]) for name, _, _ in servers)
    print(f"ratio netboot / nginx: {ours / theirs:.2f}x (1 download), {ours_p / theirs_p:.2f}x "
          f"({args.parallel} at once); goal >= 0.8x")
    print("runs, 1 download: " + "; ".join(f"{n}: " + " ".join(f"{v:.0f}" for v in single[n]) for n in single))
    return 0


if __name__ == "__main__":
    sys.exit(main())
