"""Small HTTP/1.1 servers that misbehave on purpose, for the network-boot tests. Run as a subprocess:

    python tests/support/faultservers.py MODE ROOT --port 0 [--log FILE] [--rate BYTES_PER_S] [--after BYTES]
                                         [--count N]
                                 [--catalog]

ROOT is a file (served as /NAME) or a directory (every file under it, by relative path). The first line on stdout
is the port. With --log, every response is a JSON line: {"event": "response", "path", "range", "if_range",
"if_none_match", "status", "length"} when it starts and {"event": "done", "path", "range", "length", "sent"} when
its body is written
(`sent` counts body bytes handed to the socket). --catalog serves GET /models like `netboot serve` (sha256, sizes;
--catalog-wrong-size: sizes one byte too many; --catalog-layers: the per-layer and per-tensor byte spans and sha256
too, from netboot's own catalog code).

Modes (a well-behaved server with ranges, ETag, If-Range, If-None-Match / If-Modified-Since, keep-alive, unless
said otherwise):
    ok              as described
    throttle        bodies at --rate bytes/s per connection (so that "mid-download" is a moment a test can hit;
                    --rate throttles any other mode too)
    norange         ignores Range and If-Range: always 200 with the whole file (like python -m http.server)
    badrange        answers a range asked after the first with the wrong Content-Range
    lie             flips one byte in the middle of every body (the catalog still gives the true sha256); with
                    --count N only in the first N bodies that cover the middle of the file
    stall           sends --after body bytes, then nothing, forever
    stall-headers   accepts connections and never answers
    html            200 with an HTML error page for every path
    html404         404 with an HTML error page for every path
    redirect        /NAME answers 302 to /r/NAME, which serves the file; /loop/... redirects to itself
    error500        500 for every path
    flaky           the first --count responses are cut after --after body bytes (connection closed)
    trickle         bodies one byte every --interval seconds (2): never silent long enough for a read timeout
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import hashlib
import json
import os
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

HTML_PAGE = (b"<!DOCTYPE html>\n<html><head><title>Error</title></head>"
             b"<body><h1>Something went wrong</h1><p>Please try again later.</p></body></html>\n")


class Server:
    def __init__(self, mode: str, root: Path, args: argparse.Namespace):
        self.mode, self.root, self.args = mode, root, args
        self.log = open(args.log, "a", buffering=1) if args.log else None  # noqa: SIM115 - for the process' life
        self.responses = 0
        self.range_requests = 0
        self.lies = 0

    def files(self) -> dict[str, Path]:
        if self.root.is_file():
            return {self.root.name: self.root}
        return {p.relative_to(self.root).as_posix(): p for p in sorted(self.root.rglob("*")) if p.is_file()}

    def write_log(self, **event) -> None:
        if self.log:
            self.log.write(json.dumps(event) + "\n")

    # -- the connection loop ------------------------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = (lines[0].split(" ") + ["", ""])[:3]
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                if self.mode == "stall-headers":
                    await asyncio.sleep(3600)
                    return
                keep = await self.respond(writer, method, unquote(urlsplit(target).path), headers)
                if not keep:
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            try:
                writer.close()
            except Exception:  # noqa: BLE001
                pass

    async def send_head(self, writer, status: str, headers: dict[str, str]) -> None:
        head = f"HTTP/1.1 {status}\r\nServer: faultserver\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        writer.write(head.encode("latin-1"))
        await writer.drain()

    async def simple(self, writer, path: str, status: str, body: bytes, ctype: str = "text/plain",
                     extra: dict | None = None) -> bool:
        self.write_log(event="response", path=path, range=None, if_range=None, if_none_match=None,
                       status=int(status.split()[0]), length=len(body))
        await self.send_head(writer, status, {"Content-Type": ctype, "Content-Length": str(len(body)), **(extra or {})})
        writer.write(body)
        await writer.drain()
        self.write_log(event="done", path=path, sent=len(body))
        return True

    async def respond(self, writer, method: str, path: str, headers: dict[str, str]) -> bool:
        if self.mode == "html":
            return await self.simple(writer, path, "200 OK", HTML_PAGE, "text/html; charset=utf-8")
        if self.mode == "html404":
            return await self.simple(writer, path, "404 Not Found", HTML_PAGE, "text/html; charset=utf-8")
        if self.mode == "error500":
            return await self.simple(writer, path, "500 Internal Server Error", b"internal error\n")
        if self.mode == "redirect":
            if path.startswith("/loop/"):
                return await self.simple(writer, path, "302 Found", b"", extra={"Location": path})
            if not path.startswith("/r/") and path != "/models":
                return await self.simple(writer, path, "302 Found", b"", extra={"Location": "/r" + path})
            path = path[2:] if path.startswith("/r/") else path
        if path == "/models" and self.args.catalog:
            return await self.simple(writer, path, "200 OK", json.dumps(self.catalog()).encode(), "application/json")
        file = self.files().get(path.lstrip("/"))
        if file is None:
            return await self.simple(writer, path, "404 Not Found", b"not found\n")
        return await self.send_file(writer, method, path, file, headers)

    def catalog(self) -> dict:
        models = []
        for rel, p in self.files().items():
            data = p.read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            size = len(data) + (1 if self.args.catalog_wrong_size else 0)
            entry_file = {"path": Path(rel).name, "url": "/" + rel, "size": size, "sha256": sha,
                          "etag": self.etag(p)}
            tok = Path(rel).with_name("tokenizer.bin").as_posix()
            tokenizer = "/" + tok if rel.endswith(".bin") and tok != rel and tok in self.files() else None
            models.append({"name": Path(rel).stem, "url": "/" + rel, "format": "unknown", "architecture": None,
                           "n_layers": None, "size": size, "sha256": sha, "files": [entry_file],
                           "tokenizer": tokenizer, "layers": [], "globals": []})
        if self.args.catalog_layers:
            from netboot.fileserver.catalog import Catalog

            spans = {e["files"][0]["path"]: e for e in Catalog(self.root if self.root.is_dir() else
                                                             self.root.parent).refresh()}
            for m in models:
                real = spans.get(m["files"][0]["path"])
                if real is not None:
                    m["layers"], m["globals"] = real["layers"], real["globals"]
        return {"models": models}

    @staticmethod
    def etag(p: Path) -> str:
        st = p.stat()
        return f'"{st.st_size:x}-{st.st_mtime_ns:x}"'

    async def send_file(self, writer, method: str, path: str, file: Path, headers: dict[str, str]) -> bool:
        st = file.stat()
        size = st.st_size
        etag = self.etag(file)
        modified = email.utils.formatdate(st.st_mtime, usegmt=True)
        common = {"ETag": etag, "Last-Modified": modified, "Content-Type": "application/octet-stream"}
        if self.mode != "norange":
            common["Accept-Ranges"] = "bytes"
        inm = headers.get("if-none-match")
        ims = headers.get("if-modified-since")
        not_modified = (inm is not None and etag in [t.strip() for t in inm.split(",")]) or (
            inm is None and ims is not None and ims == modified)
        if not_modified and self.mode != "norange":
            self.write_log(event="response", path=path, range=headers.get("range"), if_range=headers.get("if-range"),
                           if_none_match=inm, status=304, length=0)
            await self.send_head(writer, "304 Not Modified", {"ETag": etag, "Last-Modified": modified})
            self.write_log(event="done", path=path, sent=0)
            return True
        start, end, status = 0, size, "200 OK"
        rng = headers.get("range")
        if_range = headers.get("if-range")
        if rng and self.mode != "norange" and (if_range is None or if_range in (etag, modified)):
            spec = rng.strip().lower().removeprefix("bytes=")
            a, _, b = spec.partition("-")
            try:
                if a == "":
                    start, end = max(0, size - int(b)), size
                else:
                    start, end = int(a), (min(size, int(b) + 1) if b else size)
            except ValueError:
                start, end = 0, size
            if start >= size or start >= end:
                self.write_log(event="response", path=path, range=rng, if_range=if_range, if_none_match=inm,
                               status=416, length=0)
                await self.send_head(writer, "416 Range Not Satisfiable",
                                     {"Content-Range": f"bytes */{size}", "Content-Length": "0"})
                return True
            status = "206 Partial Content"
            self.range_requests += 1
            shown_start, shown_end = start, end
            if self.mode == "badrange" and self.range_requests > 1:
                shown_start, shown_end = start + 1, end + 1  # lies about which bytes these are
            common["Content-Range"] = f"bytes {shown_start}-{shown_end - 1}/{size}"
        length = end - start
        self.responses += 1
        self.write_log(event="response", path=path, range=rng, if_range=if_range, if_none_match=inm,
                       status=int(status.split()[0]), length=length)
        await self.send_head(writer, status, {**common, "Content-Length": str(length)})
        if method == "HEAD":
            return True
        return await self.send_body(writer, path, file, start, end, rng)

    async def send_body(self, writer, path: str, file: Path, start: int, end: int, rng: str | None = None) -> bool:
        args = self.args
        limit = None
        if self.mode == "stall" or (self.mode == "flaky" and self.responses <= args.count):
            limit = args.after
        chunk = 1 << 20
        rate = args.rate if self.mode == "throttle" or args.rate_given else None
        if rate:
            chunk = max(1024, int(rate) // 20)
        if self.mode == "trickle":
            chunk, rate = 1, 1 / args.interval
        sent = 0
        middle = None
        if self.mode == "lie":
            size = file.stat().st_size
            middle = size // 2
            if start <= middle < end:
                self.lies += 1
                if args.count_given and self.lies > args.count:
                    middle = None
        fd = os.open(file, os.O_RDONLY)
        try:
            pos = start
            while pos < end:
                n = min(chunk, end - pos)
                if limit is not None:
                    n = min(n, limit - sent)
                    if n <= 0:
                        break
                data = os.pread(fd, n, pos)
                if middle is not None and pos <= middle < pos + len(data):
                    b = bytearray(data)
                    b[middle - pos] ^= 0xFF
                    data = bytes(b)
                writer.write(data)
                await writer.drain()
                pos += len(data)
                sent += len(data)
                if rate:
                    await asyncio.sleep(len(data) / rate)
        finally:
            os.close(fd)
            self.write_log(event="done", path=path, range=rng, length=end - start, sent=sent)
        if pos < end:
            if self.mode == "stall":
                await asyncio.sleep(3600)
            return False  # cut: close the connection mid-body
        return True


async def main_async(args: argparse.Namespace) -> None:
    server = Server(args.mode, Path(args.root).resolve(), args)
    srv = await asyncio.start_server(server.handle, "127.0.0.1", args.port, reuse_address=True)
    port = srv.sockets[0].getsockname()[1]
    print(port, flush=True)
    async with srv:
        await srv.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["ok", "throttle", "norange", "badrange", "lie", "stall", "stall-headers",
                                         "html", "html404", "redirect", "error500", "flaky", "trickle"])
    parser.add_argument("root")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log", default=None)
    parser.add_argument("--rate", type=float, default=None, help="bytes per second per connection (throttle; any mode)")
    parser.add_argument("--after", type=int, default=65536, help="body bytes before stalling or cutting")
    parser.add_argument("--count", type=int, default=None, help="responses cut (flaky, default 1); bodies corrupted "
                        "(lie, default all)")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between the bytes of a trickle")
    parser.add_argument("--catalog", action="store_true", help="serve GET /models")
    parser.add_argument("--catalog-wrong-size", action="store_true", help="the catalog says one byte more")
    parser.add_argument("--catalog-layers", action="store_true", help="the catalog has per-layer spans and sha256")
    args = parser.parse_args()
    args.rate_given = args.rate is not None
    args.count_given = args.count is not None
    if args.count is None:
        args.count = 1
    if args.rate is None:
        args.rate = 2e6
    try:
        asyncio.run(main_async(args))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
