"""HTTP endpoints for operators and orchestrators.

    /metrics  Prometheus exposition of the catalogue
    /healthz  200 while the process and every link's stages are alive (liveness)
    /readyz   200 when every link can move data: sources and sinks open, egress links
              receiving heartbeats (readiness); 503 with the reasons otherwise
    /status   JSON: per-link state, heartbeat age, rates, loss, buffer fill, peer counters

Bounded, because it may listen where others can reach it: at most max_connections
at once (more are closed at once and counted in the log, at most one line per
REFUSALS_LOG_SECONDS), each with a deadline that covers the TLS handshake, the
request and the reply: a client that trickles bytes is cut off all the same. With a certificate it
serves HTTPS only, and with client_ca only to clients whose certificate that CA
signed (mTLS), as operators expect of any control API. The TLS handshake runs
on the connection's own thread, so a slow client never holds up the others.
"""

import json
import logging
import os
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST

from ddc.telemetry.prometheus import build_registry, exposition
from ddc.transport.sockets import AddressError, resolve

log = logging.getLogger("ddc.telemetry")

REFUSALS_LOG_SECONDS = 10.0


def _log_request_error(server, request, client_address) -> None:
    """Keeps a failing request out of stderr's raw tracebacks; the JSON log gets it instead."""
    log.exception(f"http: request from {client_address[0]} failed")


def tls_context(config) -> ssl.SSLContext | None:
    """The server's TLS context from the [telemetry.http] keys, or None for plain HTTP."""
    if config.certificate is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.certificate, config.private_key)
        if config.client_ca is not None:
            context.load_verify_locations(config.client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as error:
        raise AddressError(f"cannot serve HTTPS with certificate {config.certificate}, private_key "
                           f"{config.private_key}, client_ca {config.client_ca}: {error}; check the files and that "
                           "the key matches the certificate") from None
    return context


class BoundedServer(ThreadingHTTPServer):
    """One thread a connection, at most `slots` of them, each connection with a deadline."""

    daemon_threads = True
    context: ssl.SSLContext | None = None
    timeout_seconds = 10.0
    slots: threading.BoundedSemaphore
    refused = 0
    refusals_logged_at = float("-inf")

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            self.refused += 1
            now = time.monotonic()
            if now - self.refusals_logged_at >= REFUSALS_LOG_SECONDS:
                self.refusals_logged_at = now
                log.warning(f"http: refused a connection from {client_address[0]}: all {self.max_connections} "
                            f"connections busy ({self.refused} refused so far)")
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    @staticmethod
    def _cut(connection) -> None:
        try:
            connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def process_request_thread(self, request, client_address):
        # A second descriptor of the same connection: shutting it down ends the connection however the first
        # is wrapped (ssl's wrap_socket detaches the socket object it was given).
        handle = socket.socket(fileno=os.dup(request.fileno()))
        deadline = threading.Timer(self.timeout_seconds, self._cut, (handle,))
        deadline.daemon = True
        deadline.start()
        try:
            request.settimeout(self.timeout_seconds)
            if self.context is not None:
                request = self.context.wrap_socket(request, server_side=True)
            self.finish_request(request, client_address)
        except (OSError, ssl.SSLError) as error:
            log.info(f"http: connection from {client_address[0]} ended: {error}")
        except Exception:
            self.handle_error(request, client_address)
        finally:
            deadline.cancel()
            handle.close()
            self.shutdown_request(request)
            self.slots.release()

    def handle_error(self, request, client_address):
        _log_request_error(self, request, client_address)


class TelemetryServer:
    def __init__(self, config, supervisor):
        endpoint = config.listen
        self.endpoint = endpoint
        self.supervisor = supervisor
        self.registry = build_registry(supervisor.links)
        family, address = resolve(endpoint, passive=True)
        self.scheme = "https" if config.certificate else "http"
        server_class = type("Server", (BoundedServer,), {
            "address_family": family, "context": tls_context(config), "timeout_seconds": config.request_timeout,
            "slots": threading.BoundedSemaphore(config.max_connections), "max_connections": config.max_connections})
        try:
            self.server = server_class(address[:2], self._handler_class())
        except OSError as error:
            raise AddressError(f"cannot serve HTTP on {endpoint}: {error.strerror}", error.errno) from None
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="ddc-http", daemon=True)

    def start(self) -> None:
        self.thread.start()
        log.info(f"serving /metrics, /healthz, /readyz and /status on {self.scheme}://{self.endpoint}",
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
