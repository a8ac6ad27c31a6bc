"""http_cost: what one HTTP exchange costs this host's CPU, sent back to back and sent paced.

A diagnostic for the scale benchmark's CPU figure. A minimal HTTP server in another process answers every
request at once with a canned Gemini-sized JSON body (no simulator logic, no latency). The client sends the
same POST, first back to back, then one every `--gap` seconds (the scale benchmark's pacing at time scale
0.05 is one request per 50 ms): with bare urllib3, with sparc-cloud's requests Session, and through
`GeminiClient.generate` (limiter, retry policy, body building, answer parsing). On a host where a thread
that wakes from idle pays for cold caches, the paced figures are much higher than the back-to-back ones
for the same code.

    python bench/http_cost.py [--requests 400] [--gap 0.05]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import urllib3
from common import emit, machine, temp_dir

from sparc_cloud.clients.gemini import GeminiClient, GeminiConfig
from sparc_cloud.clients.gemini_auth import GeminiOAuth
from sparc_cloud.http.clock import RealClock
from sparc_cloud.http.ratelimit import RateLimit, RateLimiters
from sparc_cloud.http.retry import RetryPolicy
from sparc_cloud.http.session import Session
from sparc_cloud.redact import SecretRegistry

SERVER = r"""
import socket, sys, threading
text = "z" * 1500
body = ('{"response": {"candidates": [{"content": {"role": "model", "parts": [{"text": "%s"}]}, '
        '"finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 150, "candidatesTokenCount": 400, '
        '"totalTokenCount": 550}}, "traceId": "t"}' % text).encode()
answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=UTF-8\r\nContent-Length: "
          + str(len(body)).encode() + b"\r\n\r\n" + body)
server = socket.create_server(("127.0.0.1", 0))
print(server.getsockname()[1], flush=True)

def serve(conn):
    buf = b""
    while True:
        data = conn.recv(65536)
        if not data:
            return
        buf += data
        while b"\r\n\r\n" in buf:
            head, rest = buf.split(b"\r\n\r\n", 1)
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if len(rest) < length:
                break
            buf = rest[length:]
            conn.sendall(answer)

while True:
    conn, _ = server.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""

PROMPT = "Research the topic 'vector databases' for the specification of a memory extension. " * 12


def cpu_ms_per_call(fn: Callable[[], Any], n: int, gap: float) -> float:
    for _ in range(20):
        fn()
    t0 = time.process_time()
    for _ in range(n):
        fn()
        if gap:
            time.sleep(gap)
    return round((time.process_time() - t0) * 1000 / n, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--gap", type=float, default=0.05)
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)  # noqa: S603
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        base = f"http://127.0.0.1:{port}/v1internal"
        url = f"{base}:generateContent"
        body = {"model": "gemini-2.5-flash", "project": "p", "user_prompt_id": "u",
                "request": {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}], "generationConfig": {},
                            "session_id": "s"}}
        headers = {"Content-Type": "application/json", "Authorization": "Bearer sim-token"}
        pool = urllib3.PoolManager()
        session = Session()

        def bare_urllib3() -> None:
            json.loads(pool.request("POST", url, body=json.dumps(body).encode(), headers=headers).data)

        def sparc_session() -> None:
            json.loads(session.post(url, json=body, headers=headers, timeout=30).content.decode("utf-8"))

        home = temp_dir("sparc-http-cost-")
        creds = home / "oauth_creds.json"
        creds.write_text(json.dumps({"access_token": "sim-token", "refresh_token": "r", "token_type": "Bearer",
                                     "expiry_date": int((time.time() + 86400) * 1000)}))
        creds.chmod(0o600)
        clock = RealClock()
        secrets = SecretRegistry()
        limiters = RateLimiters(clock, {("gemini", "generate", "gemini-2.5-flash"): RateLimit(per_minute=1e9, burst=1000)})
        client = GeminiClient(GeminiConfig(base_url=base, project="p"), session=session, limiters=limiters,
                              policy=RetryPolicy(), clock=clock, secrets=secrets,
                              oauth=GeminiOAuth(creds, clock=clock, secrets=secrets, session=session))

        def gemini_client() -> None:
            client.generate(PROMPT, model="gemini-2.5-flash")

        rows = {}
        for name, fn in [("bare_urllib3", bare_urllib3), ("sparc_session", sparc_session),
                         ("gemini_client", gemini_client)]:
            rows[name] = {"back_to_back_cpu_ms": cpu_ms_per_call(fn, args.requests, 0.0),
                          "paced_cpu_ms": cpu_ms_per_call(fn, max(50, args.requests // 4), args.gap)}
        t0 = time.process_time()
        sum(i * i for i in range(3_000_000))
        emit({"benchmark": "http_cost", "gap_s": args.gap, "per_request": rows,
              "reference_loop_cpu_s": round(time.process_time() - t0, 3), "machine": machine()})
    finally:
        server.kill()
        server.wait(timeout=10)


if __name__ == "__main__":
    socket.setdefaulttimeout(30)
    main()
