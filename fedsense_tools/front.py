"""The fleet's TLS front: nginx passing the Fleet API's calls and nothing else.

flwr 1.42's SuperLink serves the Control API (``flwr run``, ``flwr supernode
register/ls/unregister``), the Runtime API and the Fleet API on one HTTPS
port (``superlink/main.py``), and the open distribution has no login for the
Control API (OIDC is "unavailable in this Flower distribution",
``superlink/config_loader.py``): whoever reaches that port with the fleet's
public ``ca.crt`` can register a key, unregister a device or run an app on
every device. So the SuperLink listens on 127.0.0.1, where the operator's
``flwr`` CLI talks to it, and the devices dial nginx, which terminates TLS
with the same server certificate and passes only the Fleet API's twelve
POST calls (``superlink/routers/fleet/router.py``) to the SuperLink over TLS,
verified against the fleet's CA. Everything else answers 404.

``fedsense fleet up --tls`` starts it for a local fleet; ``fedsense fleet
certs`` writes the same configuration for a real deployment.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from fedsense_tools.fleetstate import FleetError
from fedsense_tools.pki import ServerPki

# What a SuperNode calls (flwr 1.42, supernode/fleet_http_client.py): HTTP/1.1 POSTs, protobuf bodies.
FLEET_CALLS = (
    "register-node", "activate-node", "deactivate-node", "unregister-node", "send-node-heartbeat",
    "pull-messages", "push-messages", "get-run", "get-fab", "push-object", "pull-object",
    "confirm-message-received",
)


def nginx_binary() -> str:
    """The nginx executable, or a FleetError saying how to get it."""
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                           if os.access(p, os.X_OK)), None)
    if found is None:
        raise FleetError("a TLS fleet puts nginx in front of the SuperLink (the devices reach only the Fleet API); "
                         "install it: apt-get install nginx")
    return found


def front_config(directory: Path, listen: str, link_port: int, pki: ServerPki) -> str:
    """nginx's configuration: listen on ``listen`` (``host:port``) with the
    server certificate, pass the Fleet API calls to the SuperLink on
    127.0.0.1:``link_port``; its pid, logs and temporary files in ``directory``."""
    d = directory.resolve()
    calls = "|".join(FLEET_CALLS)
    user = "user nobody nogroup;\n" if os.geteuid() == 0 else ""  # workers never run as root
    return f"""# The fleet's TLS front (fedsense_tools/front.py): only the Fleet API reaches the SuperLink.
# Start: nginx -p {d} -c {d}/nginx.conf -e {d}/error.log
{user}daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log notice;
events {{ worker_connections 512; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    server_tokens off;
    upstream superlink {{ server 127.0.0.1:{link_port}; keepalive 16; }}
    server {{
        listen {listen} ssl;
        ssl_certificate {pki.cert};
        ssl_certificate_key {pki.key};
        ssl_protocols TLSv1.2 TLSv1.3;
        client_max_body_size 64m;  # push-object: arrays travel in chunks of 5 MB
        proxy_read_timeout 120s;
        proxy_request_buffering off;
        proxy_buffering off;
        location ~ ^/v1/fleet/(?:{calls})$ {{
            limit_except POST {{ deny all; }}
            proxy_pass https://superlink$uri;  # nginx's normalised path: one of the names above
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host localhost;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {pki.ca_cert};
            proxy_ssl_name localhost;
            proxy_ssl_server_name on;
        }}
        location / {{ return 404; }}  # the Control and Runtime APIs, /health, /docs: not from here
    }}
}}
"""


def write_front(directory: Path, listen: str, link_port: int, pki: ServerPki) -> Path:
    """``directory/nginx.conf`` (and its temporary folders); its path."""
    (directory / "tmp").mkdir(parents=True, exist_ok=True)
    path = directory / "nginx.conf"
    path.write_text(front_config(directory, listen, link_port, pki))
    return path


def front_args(directory: Path) -> list[str]:
    """nginx's arguments for ``directory/nginx.conf`` (it runs in the foreground)."""
    d = directory.resolve()
    return ["-p", str(d), "-c", str(d / "nginx.conf"), "-e", str(d / "error.log")]


def front_command(directory: Path) -> list[str]:
    """The command that starts the front of ``directory`` on this machine."""
    return [nginx_binary(), *front_args(directory)]
