"""Joining a WLAN (ESP32, Pico W): a module of its own, so a board on another link never
loads its names (edge/startup.py imports it only when node.json has "wifi").
MicroPython and CPython (where it is a no-op: no `network` module). It imports nothing from
edge/: the caller turns a failure into its own error.
"""


def connect_wifi(wifi, timeout_s=20):
    """Join a WLAN on ports with `network` (ESP32, Pico W). None when joined (or there is no
    `network`), else why not, in one line."""
    try:
        import network
    except ImportError:
        return None
    import time
    sta = network.WLAN(network.STA_IF)
    sta.active(True)
    if not sta.isconnected():
        sta.connect(wifi["ssid"], wifi.get("password", ""))
        t = 0
        while not sta.isconnected():
            if t >= timeout_s * 10:
                return "wifi: no connection to %r after %d s" % (wifi["ssid"], timeout_s)
            time.sleep(0.1)
            t += 1
    return None
