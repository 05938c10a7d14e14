"""Shared pytest fixtures; the real-peer fixtures live in peers.py."""

from peers import (  # noqa: F401  (re-exported as fixtures)
    aiocoap_server_factory,
    libcoap_server,
    mosquitto_broker,
    mosquitto_factory,
    udp_proxy_factory,
)
