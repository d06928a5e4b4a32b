"""The SPIFFE Python clients (`spiffe`, `spiffe-tls`) against warrant's Workload API.

usage: workload_api.py SOCKET fetch AUDIENCE
       workload_api.py SOCKET server PORT_FILE CLIENT_ID_PREFIX
       workload_api.py SOCKET client PORT SERVER_ID_PREFIX
       workload_api.py SOCKET raw
       workload_api.py SOCKET bundle API_URL
       workload_api.py SOCKET jwt AUDIENCE
       workload_api.py SOCKET validate TOKEN AUDIENCE

fetch:  both SVID kinds and both bundles, a JWT-SVID validated by the API and
        by the library with the bundle, and an X.509-SVID rotated in the
        stream before it expired; prints a JSON object.
server: an mTLS server (spiffe-tls, its X.509-SVID from the API) accepting
        only clients whose SPIFFE ID starts with CLIENT_ID_PREFIX (an agent's
        instances); writes its port to PORT_FILE, answers one connection with
        the client's SPIFFE ID, prints it.
client: dials the server with its own X.509-SVID, accepting only a server
        whose SPIFFE ID starts with SERVER_ID_PREFIX; prints what it got.
raw:    calls without the `workload.spiffe.io` header, with grpcio itself;
        prints the status codes.
bundle: the SPIFFE bundle the API listener publishes, checked against the
        SVIDs the Workload API issues, with PyJWT and cryptography.
"""
import json
import sys
import threading
import time

from cryptography import x509 as cx509


def main():
    sock, mode = sys.argv[1], sys.argv[2]
    target = f"unix:{sock}"
    if mode == "raw":
        import grpc
        from spiffe._proto import workload_pb2, workload_pb2_grpc

        stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(grpc.insecure_channel(target))
        out = {}
        try:
            stub.FetchJWTSVID(workload_pb2.JWTSVIDRequest(audience=["a"]), timeout=10)
            out["no_header"] = "OK"
        except grpc.RpcError as e:
            out["no_header"] = [e.code().name, e.details()]
        try:
            stub.FetchJWTSVID(
                workload_pb2.JWTSVIDRequest(audience=["a"]),
                metadata=[("workload.spiffe.io", "true")],
                timeout=10,
            )
            out["with_header"] = "OK"
        except grpc.RpcError as e:
            out["with_header"] = [e.code().name, e.details()]
        try:
            stub.FetchJWTSVID(
                workload_pb2.JWTSVIDRequest(audience=["a", "b"]),
                metadata=[("workload.spiffe.io", "true")],
                timeout=10,
            )
            out["two_audiences"] = "OK"
        except grpc.RpcError as e:
            out["two_audiences"] = [e.code().name, e.details()]
        print(json.dumps(out))
        return

    from spiffe import JwtSvid, WorkloadApiClient, X509Source

    if mode == "jwt":
        with WorkloadApiClient(socket_path=target) as c:
            print(c.fetch_jwt_svid(audience={sys.argv[3]}).token)
        return
    if mode == "validate":
        with WorkloadApiClient(socket_path=target) as c:
            try:
                print("valid", c.validate_jwt_svid(sys.argv[3], sys.argv[4]).spiffe_id)
            except Exception as e:
                print("refused", type(e).__name__, e)
        return

    if mode == "bundle":
        # The published SPIFFE bundle (GET /.well-known/spiffe-bundle), as a
        # relying party off this host would use it: PyJWT and cryptography.
        import base64
        import urllib.request

        import jwt as pyjwt

        with urllib.request.urlopen(sys.argv[3] + "/.well-known/spiffe-bundle") as r:
            bundle = json.load(r)
        cas = [cx509.load_der_x509_certificate(base64.b64decode(k["x5c"][0]))
               for k in bundle["keys"] if k["use"] == "x509-svid"]
        jwt_keys = {k["kid"]: k for k in bundle["keys"] if k["use"] == "jwt-svid"}
        out = {"x509_authorities": len(cas), "jwt_authorities": len(jwt_keys),
               "sequence": bundle["spiffe_sequence"], "refresh_hint": bundle["spiffe_refresh_hint"]}
        with WorkloadApiClient(socket_path=target) as c:
            leaf = c.fetch_x509_svid().leaf
            ok = False
            for ca in cas:
                try:
                    leaf.verify_directly_issued_by(ca)
                    ok = True
                except Exception:
                    pass
            out["svid_verifies_with_published_ca"] = ok
            svid = c.fetch_jwt_svid(audience={"https://api.example"})
            kid = pyjwt.get_unverified_header(svid.token)["kid"]
            key = pyjwt.PyJWK(jwt_keys[kid]).key
            claims = pyjwt.decode(svid.token, key, algorithms=["ES256", "EdDSA"],
                                  audience="https://api.example")
            out["jwt_verifies_with_published_key"] = claims["sub"] == str(svid.spiffe_id)
        print(json.dumps(out))
        return

    if mode == "fetch":
        audience = sys.argv[3]
        out = {}
        with WorkloadApiClient(socket_path=target) as c:
            svid = c.fetch_x509_svid()
            leaf = svid.leaf
            out["x509_id"] = str(svid.spiffe_id)
            out["x509_lifetime"] = (leaf.not_valid_after_utc - leaf.not_valid_before_utc).total_seconds()
            out["x509_is_ca"] = leaf.extensions.get_extension_for_class(cx509.BasicConstraints).value.ca
            out["x509_sans"] = [
                str(u) for u in leaf.extensions.get_extension_for_class(
                    cx509.SubjectAlternativeName).value.get_values_for_type(cx509.UniformResourceIdentifier)
            ]
            bundles = c.fetch_x509_bundles()
            td = svid.spiffe_id.trust_domain
            authorities = bundles.get_bundle_for_trust_domain(td).x509_authorities
            out["x509_authorities"] = len(authorities)
            # The leaf is signed by a CA of the bundle.
            signed = False
            for ca in authorities:
                try:
                    leaf.verify_directly_issued_by(ca)
                    signed = True
                except Exception:
                    pass
            out["x509_signed_by_bundle"] = signed
            jwt = c.fetch_jwt_svid(audience={audience})
            out["jwt_id"] = str(jwt.spiffe_id)
            out["jwt_audience"] = sorted(jwt.audience)
            validated = c.validate_jwt_svid(jwt.token, audience)
            out["validated_id"] = str(validated.spiffe_id)
            try:
                c.validate_jwt_svid(jwt.token, "https://someone-else.example")
                out["wrong_audience"] = "accepted"
            except Exception as e:
                out["wrong_audience"] = type(e).__name__
            jwt_bundle = c.fetch_jwt_bundles().get_bundle_for_trust_domain(jwt.spiffe_id.trust_domain)
            parsed = JwtSvid.parse_and_validate(jwt.token, jwt_bundle, {audience})
            out["library_validated_id"] = str(parsed.spiffe_id)
            try:
                JwtSvid.parse_and_validate(jwt.token[:-8] + "AAAAAAAA", jwt_bundle, {audience})
                out["tampered"] = "accepted"
            except Exception as e:
                out["tampered"] = type(e).__name__
            # Rotation: the stream sends a new SVID before the first expires.
            seen = []
            done = threading.Event()

            def on_update(ctx):
                s = ctx.default_svid
                seen.append((s.leaf.serial_number, s.leaf.not_valid_after_utc.timestamp(), time.time()))
                if len(seen) >= 2:
                    done.set()

            cancel = c.stream_x509_contexts(on_success=on_update, on_error=lambda e: done.set())
            done.wait(timeout=60)
            cancel.cancel()
            out["rotations"] = len(seen)
            if len(seen) >= 2:
                out["rotated_serial_differs"] = seen[0][0] != seen[1][0]
                out["rotated_before_expiry"] = seen[1][2] < seen[0][1]
        print(json.dumps(out))
        return

    source = X509Source(socket_path=target, timeout_in_seconds=30)
    from spiffetls import ListenOptions, dial, listen

    def authorize_prefix(prefix):
        def check(cert):
            ids = cert.to_cryptography().extensions.get_extension_for_class(
                cx509.SubjectAlternativeName).value.get_values_for_type(cx509.UniformResourceIdentifier)
            return len(ids) == 1 and ids[0].startswith(prefix)
        return check

    if mode == "server":
        port_file, client_id = sys.argv[3], sys.argv[4]
        server = listen(
            "127.0.0.1:0",
            source,
            ListenOptions(authorize_fn=authorize_prefix(client_id)),
        )
        port = server.getsockname()[1]
        with open(port_file + ".tmp", "w") as f:
            f.write(str(port))
        import os

        os.rename(port_file + ".tmp", port_file)
        # Handshakes a client refuses (or that are refused) are skipped; the
        # first one that completes is answered.
        while True:
            conn, _ = server.accept()
            try:
                conn.do_handshake()
                break
            except Exception:
                conn.close()
        peer = conn.get_peer_certificate().to_cryptography()
        peer_id = peer.extensions.get_extension_for_class(
            cx509.SubjectAlternativeName).value.get_values_for_type(cx509.UniformResourceIdentifier)[0]
        msg = conn.recv(1024)
        conn.sendall(f"hello {peer_id}, you said {msg.decode()}".encode())
        conn.shutdown()
        conn.close()
        print(json.dumps({"server_saw": peer_id}))
    elif mode == "client":
        port, server_id = sys.argv[3], sys.argv[4]
        conn = dial(f"127.0.0.1:{port}", source, authorize_fn=authorize_prefix(server_id))
        conn.sendall(b"ping")
        data = b""
        while True:
            try:
                chunk = conn.recv(1024)
            except Exception:
                break
            if not chunk:
                break
            data += chunk
        print(json.dumps({"client_got": data.decode()}))
    source.close()


main()
