#!/usr/bin/env python3
"""Hostile load on a replica's metrics endpoint (`vsr start --metrics`), for measuring that it
does not slow the replica: keeps `--connections` connections open against the endpoint, a
quarter idle, a quarter with half a request line, a quarter with headers that never end, a
quarter sending binary garbage a byte at a time, reopening each as the replica closes it, until
killed or `--seconds` pass. Prints how many connections it opened.

    scripts/metrics-flood.py --port 9100 --connections 1000 --seconds 60
"""
import argparse
import selectors
import socket
import time

PAYLOADS = [b"", b"GET /metr", b"GET /metrics HTTP/1.1\r\nX: y\r\n", b"\xff\x00\x13\x37\x0d"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    selector = selectors.DefaultSelector()
    opened = 0
    deadline = time.monotonic() + args.seconds

    def open_one(kind):
        nonlocal opened
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", args.port))
        except BlockingIOError:
            pass
        except OSError:
            s.close()
            return
        opened += 1
        selector.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, [kind, 0])

    for i in range(args.connections):
        open_one(i % 4)
    while time.monotonic() < deadline:
        for key, events in selector.select(timeout=0.05):
            s, state = key.fileobj, key.data
            kind, sent = state
            if events & selectors.EVENT_READ:
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    selector.unregister(s)
                    s.close()
                    open_one(kind)
                    continue
            if events & selectors.EVENT_WRITE:
                payload = PAYLOADS[kind]
                if sent < len(payload):
                    # One byte at a time: as slow as a client can be.
                    try:
                        s.send(payload[sent:sent + 1])
                        state[1] = sent + 1
                    except OSError:
                        pass
                else:
                    selector.modify(s, selectors.EVENT_READ, state)
    print(f"metrics-flood: opened {opened} connections")


if __name__ == "__main__":
    main()
