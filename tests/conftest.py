"""Shared pytest fixtures (the real-peer fixtures live in peers.py) and the `e2e` marking.

`make test-fast` runs `-m "not e2e and not slow"`. A test that asks for a real peer (one of
the fixtures below) is end-to-end whether or not its module says so; modules and tests that
start processes themselves (gateway, edges, brokers) carry `pytest.mark.e2e` explicitly.
"""

import pytest

from peers import (  # noqa: F401  (re-exported as fixtures)
    aiocoap_server_factory,
    libcoap_server,
    mosquitto_broker,
    mosquitto_factory,
    udp_proxy_factory,
)

REAL_PEERS = {"aiocoap_server_factory", "libcoap_server", "mosquitto_broker", "mosquitto_factory",
              "udp_proxy_factory"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if REAL_PEERS & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
