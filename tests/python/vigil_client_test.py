"""Vigil's API as a stock Python client sees it: grpcio from PyPI, stubs
generated from proto/vigil/v1 by grpcio-tools, default channel options.

Driven by tests/tests/python_client.rs, which starts the daemon and passes
what the client needs as arguments. Each step asserts and prints one JSON
line of what it found; any failure exits non-zero with the reason.

    vigil_client_test.py local SOCKET SESSION
    vigil_client_test.py tls HOST:PORT SERVER_CA CLIENT_CERT CLIENT_KEY
"""

import json
import sys
import threading

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from vigil.v1 import (
    event_service_pb2,
    event_service_pb2_grpc,
    governance_service_pb2,
    governance_service_pb2_grpc,
    node_service_pb2,
    node_service_pb2_grpc,
)

WAIT = 30  # seconds for any one call or stream


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def health(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ["", "vigil.v1.NodeService"]:
        answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=WAIT)
        check(
            answer.status == health_pb2.HealthCheckResponse.SERVING,
            f"health of {service!r}: {answer}",
        )


def reflected_services(channel):
    services = sorted(ProtoReflectionDescriptorDatabase(channel).get_services())
    for want in [
        "vigil.v1.EventService",
        "vigil.v1.GovernanceService",
        "vigil.v1.NodeService",
        "grpc.health.v1.Health",
    ]:
        check(want in services, f"reflection lists {want}: {services}")
    return services


def agents(channel):
    stub = governance_service_pb2_grpc.GovernanceServiceStub(channel)
    answer = stub.ListAgents(governance_service_pb2.ListAgentsRequest(), timeout=WAIT)
    names = [a.name for a in answer.agents]
    check(names == ["coder"], f"ListAgents: {names}")
    return answer


def newest(channel):
    stub = node_service_pb2_grpc.NodeServiceStub(channel)
    status = stub.Status(node_service_pb2.StatusRequest(), timeout=WAIT)
    return status.journal.newest_sequence


def read_through(call, last):
    """The events of a subscription up to sequence `last`, then cancels it."""
    events = []
    try:
        for response in call:
            events.append(response.event)
            if response.event.sequence >= last:
                break
    finally:
        call.cancel()
    return events


def contiguous(events, first, last, what):
    got = [e.sequence for e in events]
    check(got == list(range(first, last + 1)), f"{what}: sequences {got}, want {first}..={last}")


def subscribe(channel, **start):
    stub = event_service_pb2_grpc.EventServiceStub(channel)
    return stub.Subscribe(event_service_pb2.SubscribeRequest(**start), timeout=WAIT)


def local(socket, session):
    # No channel options: what any user writes first.
    with grpc.insecure_channel(f"unix://{socket}") as channel:
        health(channel)
        services = reflected_services(channel)
        listed = agents(channel)
        sessions = [s.id for s in listed.agents[0].sessions]
        check(session in sessions, f"session {session} in ListAgents: {sessions}")

        last = newest(channel)
        check(last >= 4, f"newest sequence {last}: the test made events first")
        everything = read_through(subscribe(channel, oldest=True), last)
        first = everything[0].sequence
        contiguous(everything, first, last, "oldest")
        # Resume from the middle: exactly what follows, once, in order.
        middle = (first + last) // 2
        resumed = read_through(subscribe(channel, after_sequence=middle), last)
        contiguous(resumed, middle + 1, last, f"after {middle}")
        check(
            [e.SerializeToString() for e in resumed]
            == [e.SerializeToString() for e in everything if e.sequence > middle],
            "a resumed stream carries the same events",
        )

        # A live subscription sees the revocation the same client makes.
        live = subscribe(channel, after_sequence=last)
        seen = []

        def follow():
            try:
                for response in live:
                    seen.append(response.event)
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.CANCELLED:
                    seen.append(e)

        reader = threading.Thread(target=follow)
        reader.start()
        stub = governance_service_pb2_grpc.GovernanceServiceStub(channel)
        revoked = stub.Revoke(
            governance_service_pb2.RevokeRequest(
                agent="coder", session=session, reason="revoked by grpcio"
            ),
            timeout=WAIT,
        )
        revocation = revoked.sequence
        check(revocation > last, f"revocation sequence {revocation} after {last}")
        reader_done = threading.Event()

        def wait_for_revocation():
            while not reader_done.is_set():
                if any(not isinstance(e, grpc.RpcError) and e.sequence >= revocation for e in seen):
                    live.cancel()
                    return
                reader_done.wait(0.05)

        waiter = threading.Thread(target=wait_for_revocation)
        waiter.start()
        reader.join(WAIT + 5)
        reader_done.set()
        waiter.join()
        failed = [e for e in seen if isinstance(e, grpc.RpcError)]
        check(not failed, f"live stream: {failed}")
        upto = [e for e in seen if e.sequence <= revocation]
        contiguous(upto, last + 1, revocation, "live")
        event = upto[-1]
        check(event.WhichOneof("payload") == "revocation", f"event {revocation}: {event}")
        check(event.revocation.session == session, f"revoked session: {event.revocation}")
        check(event.revocation.reason == "revoked by grpcio", f"reason: {event.revocation}")
        check("local socket" in event.revocation.by, f"by: {event.revocation.by}")

        again = agents(channel).agents[0]
        check(
            any(s.id == session and s.revoked for s in again.sessions),
            f"session {session} revoked in ListAgents: {again.sessions}",
        )
    return {
        "services": services,
        "oldest": first,
        "newest": last,
        "resumed_after": middle,
        "revocation": revocation,
    }


def tls(address, server_ca, cert, key):
    def read(path):
        with open(path, "rb") as f:
            return f.read()

    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(server_ca),
        private_key=read(key),
        certificate_chain=read(cert),
    )
    with grpc.secure_channel(address, credentials) as channel:
        health(channel)
        services = reflected_services(channel)
        agents(channel)
        last = newest(channel)
        events = read_through(subscribe(channel, oldest=True), last)
        contiguous(events, events[0].sequence, last, "oldest over TLS")
        stub = governance_service_pb2_grpc.GovernanceServiceStub(channel)
        try:
            stub.Revoke(
                governance_service_pb2.RevokeRequest(agent="coder", reason="a reader tries"),
                timeout=WAIT,
            )
            raise AssertionError("a reader revoked")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.PERMISSION_DENIED, f"reader Revoke: {e}")
            check("reader" in e.details(), f"reader Revoke: {e.details()}")

    # Without a client certificate the handshake fails: no call is served.
    anonymous = grpc.ssl_channel_credentials(root_certificates=read(server_ca))
    with grpc.secure_channel(address, anonymous) as channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            raise AssertionError("a client without a certificate was served")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.UNAVAILABLE, f"no certificate: {e}")
    return {"services": services, "newest": last}


def main(argv):
    steps = {"local": local, "tls": tls}
    if len(argv) < 2 or argv[1] not in steps:
        sys.exit(__doc__)
    print(json.dumps(steps[argv[1]](*argv[2:])))


if __name__ == "__main__":
    main(sys.argv)
