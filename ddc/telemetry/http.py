"""HTTP endpoints for operators and orchestrators.

    /metrics  Prometheus exposition of the catalogue
    /healthz  200 while the process and every link's stages are alive (liveness)
    /readyz   200 when every link can move data: sources and sinks open, egress links
              receiving heartbeats (readiness); 503 with the reasons otherwise
    /status   JSON: per-link state, heartbeat age, rates, loss, buffer fill, peer counters
"""

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST

from ddc.telemetry.prometheus import build_registry, exposition
from ddc.transport.sockets import AddressError, resolve

log = logging.getLogger("ddc.telemetry")


def _log_request_error(server, request, client_address) -> None:
    """Keeps a failing request out of stderr's raw tracebacks; the JSON log gets it instead."""
    log.exception(f"http: request from {client_address[0]} failed")


class TelemetryServer:
    def __init__(self, endpoint, supervisor):
        self.endpoint = endpoint
        self.supervisor = supervisor
        self.registry = build_registry(supervisor.links)
        family, address = resolve(endpoint, passive=True)
        server_class = type("Server", (ThreadingHTTPServer,), {
            "address_family": family, "daemon_threads": True, "handle_error": _log_request_error})
        try:
            self.server = server_class(address[:2], self._handler_class())
        except OSError as error:
            raise AddressError(f"cannot serve HTTP on {endpoint}: {error.strerror}") from None
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="ddc-http", daemon=True)

    def start(self) -> None:
        self.thread.start()
        log.info(f"serving /metrics, /healthz, /readyz and /status on http://{self.endpoint}",
                 extra={"fields": {"listen": str(self.endpoint)}})

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler_class(self):
        telemetry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, exposition(telemetry.registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    alive, problems = telemetry.supervisor.health()
                    self._json(200 if alive else 503, {"alive": alive, "problems": problems})
                elif path == "/readyz":
                    ready, problems = telemetry.supervisor.readiness()
                    self._json(200 if ready else 503, {"ready": ready, "problems": problems})
                elif path == "/status":
                    self._json(200, telemetry.supervisor.status())
                else:
                    self._json(404, {"error": f"no such path {path!r}; try /metrics, /healthz, /readyz or /status"})

            def _json(self, code, body):
                self._reply(code, (json.dumps(body, indent=2, default=str) + "\n").encode(), "application/json")

            def _reply(self, code, body: bytes, content_type: str):
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format, *arguments):
                log.debug("http: " + format % arguments)

        return Handler
