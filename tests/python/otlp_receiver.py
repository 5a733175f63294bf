"""An OTLP logs receiver nobody at Vigil wrote: the OpenTelemetry project's
own generated protos (`opentelemetry-proto` from PyPI) served by grpcio.

Driven by tests/tests/otlp.rs. Every log record received is written, and
flushed, as one JSON line to OUT before the request is answered, so what
the file holds is what the collector acknowledged (or was about to).

    otlp_receiver.py PORT OUT [--header KEY=VALUE] [--tls CA CERT KEY]

With --header, a request without that metadata is refused with
UNAUTHENTICATED. With --tls, the server presents CERT/KEY and requires a
client certificate signed by CA. Prints "ready" once it listens.
"""

import argparse
import json
import sys
import threading
from concurrent import futures

import grpc
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc


def value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class Receiver(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, out, header):
        self.out = out
        self.header = header
        self.lock = threading.Lock()

    def Export(self, request, context):
        metadata = dict(context.invocation_metadata())
        if self.header:
            key, want = self.header
            if metadata.get(key) != want:
                context.abort(grpc.StatusCode.UNAUTHENTICATED, f"{key} is missing or wrong")
        peer_cn = [
            v.decode() for v in context.auth_context().get("x509_common_name", [])
        ]
        with self.lock:
            for rl in request.resource_logs:
                resource = {kv.key: value(kv.value) for kv in rl.resource.attributes}
                for sl in rl.scope_logs:
                    for r in sl.log_records:
                        line = {
                            "attributes": {kv.key: value(kv.value) for kv in r.attributes},
                            "body": value(r.body),
                            "event_name": r.event_name,
                            "severity_number": r.severity_number,
                            "severity_text": r.severity_text,
                            "time_unix_nano": r.time_unix_nano,
                            "observed_time_unix_nano": r.observed_time_unix_nano,
                            "resource": resource,
                            "scope": MessageToDict(sl.scope),
                            "peer_cn": peer_cn,
                            "metadata": {k: v for k, v in metadata.items() if k.startswith("x-")},
                        }
                        self.out.write(json.dumps(line) + "\n")
            self.out.flush()
        return logs_service_pb2.ExportLogsServiceResponse()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("out")
    p.add_argument("--header")
    p.add_argument("--tls", nargs=3, metavar=("CA", "CERT", "KEY"))
    args = p.parse_args()
    header = tuple(args.header.split("=", 1)) if args.header else None
    out = open(args.out, "a", encoding="utf-8")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Receiver(out, header), server)
    address = f"127.0.0.1:{args.port}"
    if args.tls:
        ca, cert, key = (open(f, "rb").read() for f in args.tls)
        creds = grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=ca, require_client_auth=True
        )
        bound = server.add_secure_port(address, creds)
    else:
        bound = server.add_insecure_port(address)
    if bound != args.port:
        sys.exit(f"could not listen on {address}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
