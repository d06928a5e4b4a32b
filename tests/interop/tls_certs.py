"""Writes a test CA and a server certificate for the TLS tests.

    tls_certs.py DIR NAME [SUFFIX]

DIR/ca.pem (the CA to trust), DIR/cert<SUFFIX>.pem (a chain for NAME and
127.0.0.1, signed by the CA) and DIR/key<SUFFIX>.pem (its key, mode 0600).
An existing ca.pem/ca-key.pem in DIR is reused, so a renewed certificate
chains to the same CA.
"""

import datetime
import ipaddress
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

out, name = sys.argv[1], sys.argv[2]
suffix = sys.argv[3] if len(sys.argv) > 3 else ""
now = datetime.datetime.now(datetime.timezone.utc)
pem = serialization.Encoding.PEM


def write(path, data, mode=0o644):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


ca_key_path = os.path.join(out, "ca-key.pem")
if os.path.exists(ca_key_path):
    ca_key = serialization.load_pem_private_key(open(ca_key_path, "rb").read(), None)
    ca = x509.load_pem_x509_certificate(open(os.path.join(out, "ca.pem"), "rb").read())
else:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "warrant test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    write(ca_key_path, ca_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), 0o600)
    write(os.path.join(out, "ca.pem"), ca.public_bytes(pem))

key = ec.generate_private_key(ec.SECP256R1())
cert = (
    x509.CertificateBuilder()
    .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name + suffix)]))
    .issuer_name(ca.subject)
    .public_key(key.public_key())
    .serial_number(x509.random_serial_number())
    .not_valid_before(now - datetime.timedelta(minutes=5))
    .not_valid_after(now + datetime.timedelta(days=1))
    .add_extension(
        x509.SubjectAlternativeName([x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
        critical=False,
    )
    .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    .sign(ca_key, hashes.SHA256())
)
write(os.path.join(out, f"cert{suffix}.pem"), cert.public_bytes(pem) + ca.public_bytes(pem))
write(
    os.path.join(out, f"key{suffix}.pem"),
    key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    0o600,
)
