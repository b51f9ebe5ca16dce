"""A python-socketio client in a switchboard channel, for e2e/socketio.test.mjs.

Usage: socketio_client.py URL USER CHANNEL TRANSPORT COUNT
Joins CHANNEL over TRANSPORT (polling, websocket, or upgrade: polling
first, then upgraded to a WebSocket), publishes COUNT
messages, and waits until it has received COUNT messages from others
after its own. Prints one JSON object per line: the join ack, each publish
ack, each `message` event's arguments, and finally {"done": true}.
"""

import json
import sys
import threading

import socketio

url, user, channel, transport, count = sys.argv[1:6]
count = int(count)

client = socketio.Client(reconnection=False)
received = []
enough = threading.Event()


output = threading.Lock()


def emit_line(value):
    # python-engineio runs each event handler on a new thread: one whole
    # line at a time, in whatever order the threads run.
    with output:
        sys.stdout.write(json.dumps(value) + "\n")
        sys.stdout.flush()


@client.on("message")
def on_message(*args):
    emit_line({"message": list(args)})
    received.append(args[0])
    if len(received) >= 2 * count:
        enough.set()


transports = ["polling", "websocket"] if transport == "upgrade" else [transport]
client.connect(url, transports=transports, auth={"user": user}, wait_timeout=10)
emit_line({"join": client.call("join", {"channel": channel}, timeout=10)})
for i in range(count):
    emit_line({"ack": client.call("publish", {"channel": channel, "msg": f"python {i}"}, timeout=10)})
if not enough.wait(timeout=20):
    emit_line({"timeout": len(received)})
emit_line({"transport": client.transport()})
client.disconnect()
emit_line({"done": True})
