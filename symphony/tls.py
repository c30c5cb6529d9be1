"""One TLS server context for every listener that serves TLS (the sidecar's
ingress, the regulator dashboard).

The context is `ssl.create_default_context(Purpose.CLIENT_AUTH)` (the standard
library's secure defaults: TLS 1.2 or later, no compression) with the server's
certificate chain, and, when a client CA is given, client certificates that are
*optional* at the TLS layer but must verify against that CA when presented:
callers that authenticate otherwise (a JWT, the dashboard token) still get in,
and the code above decides what a verified certificate admits.
"""

from __future__ import annotations

import ssl

from symphony.errors import SymphonyError


def server_context(cert_file: str, key_file: str, client_ca_file: str = "", *,
                   error: type[SymphonyError], label: str) -> ssl.SSLContext:
    """The server context for these files; an unusable file raises `error` with "`label`: reason"."""
    assert cert_file and key_file, "a TLS server needs both a certificate and its key"
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert_file, key_file)
        if client_ca_file:
            context.load_verify_locations(client_ca_file)
            context.verify_mode = ssl.CERT_OPTIONAL
    except (OSError, ssl.SSLError) as exc:
        raise error(f"{label}: {exc}") from None
    assert context.verify_mode == (ssl.CERT_OPTIONAL if client_ca_file else ssl.CERT_NONE)
    return context
