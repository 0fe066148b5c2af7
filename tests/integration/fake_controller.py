"""A fake controller for agent tests: answers POST /v1/agent/heartbeat like
meridian-controller does (services' epochs, pending commands, acks of
results), records every heartbeat, and hands out the commands a test queues
(kept until the agent reports their result). Agent tests use it to see
exactly what an agent reported and to drive it without a store.
Used by test_agent_pg.py and test_agent_checks.py.
"""
import http.server
import json
import threading
import time

from meridian_harness import free_port, wait_until


class FakeController:
    """Answers heartbeats like a controller: per node a list of pending
    commands (kept until the agent reports their result, then acked)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.beats = {}        # node -> list of (monotonic time, request)
        self.results = {}      # command id -> (monotonic time, result)
        self.pending = {}      # node -> list of commands
        self.delivered = {}    # command id -> monotonic time first delivered
        self.services = {}     # service -> {epoch, primary_region, primary_position}
        self.recorded = True
        self.primary_node = None  # whose member position feeds primary_position
        self.token = None         # the agents' bearer token
        self.port = free_port()
        ctl = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path == "/health":
                    return self.reply(200, {"ok": True})
                return self.reply(503, {"error": {"code": "down", "message": "x"}})

            def do_POST(self):
                if self.path != "/v1/agent/heartbeat":
                    return self.reply(404, {"error": {"code": "not_found", "message": "x"}})
                if self.headers.get("Authorization") != "Bearer " + str(ctl.token):
                    return self.reply(401, {"error": {"code": "unauthorized", "message": "x"}})
                n = int(self.headers.get("Content-Length", "0"))
                req = json.loads(self.rfile.read(n))
                self.reply(200, ctl.answer(req))

            def reply(self, status, obj):
                body = json.dumps(obj).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the agent gave up (timeout, stop): it will ask again

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def answer(self, req):
        now = time.monotonic()
        node = req["node"]
        with self.lock:
            self.beats.setdefault(node, []).append((now, req))
            if node == self.primary_node:
                for m in req.get("members", []):
                    if m["role"] == "primary" and m["service"] in self.services:
                        self.services[m["service"]]["primary_position"] = m["position"]
            ack = []
            for res in req.get("results", []):
                self.results.setdefault(res["id"], (now, res))
                ack.append(res["id"])
                self.pending[node] = [c for c in self.pending.get(node, [])
                                      if c["id"] != res["id"]]
            cmds = list(self.pending.get(node, []))
            for c in cmds:
                self.delivered.setdefault(c["id"], now)
            services = {m["service"]: self.services[m["service"]]
                        for m in req.get("members", []) if m["service"] in self.services}
            return {"recorded": self.recorded, "heartbeat_ms": 200, "services": services,
                    "commands": cmds, "ack": ack}

    def command(self, node, cid, service, member, kind, epoch, args=None):
        with self.lock:
            self.pending.setdefault(node, []).append(
                {"id": cid, "service": service, "member": member, "kind": kind,
                 "epoch": epoch, "args": args or {}})

    def result(self, cid, timeout=20.0):
        def get():
            with self.lock:
                return self.results.get(cid)
        return wait_until(get, timeout, what="result of command %s" % cid)[1]

    def last_member(self, node, member):
        with self.lock:
            beats = self.beats.get(node, [])
            if not beats:
                return None
            for m in beats[-1][1].get("members", []):
                if m["name"] == member:
                    return m
        return None

    def beat_with_result(self, node, cid):
        """The first heartbeat of node that reported the result of cid."""
        with self.lock:
            for _, b in self.beats.get(node, []):
                if any(r["id"] == cid for r in b.get("results", [])):
                    return b
        return None

    def last_beat(self, node):
        with self.lock:
            beats = self.beats.get(node, [])
            return beats[-1][1] if beats else None

    def close(self):
        self.server.shutdown()
        self.server.server_close()
