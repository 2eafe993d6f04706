"""MQTT load generators and the bare baseline subscriber, each run as its own process.

`publish` sends pre-generated messages at QoS 1 (as fast as the broker acknowledges them, or
paced), recording when each was handed to the client; `subscribe` is the bare paho-mqtt
subscriber central's ingest is compared with: the same broker, topics, QoS 1 and shared
subscription, doing nothing with a message but noting when it arrived.

Both are internal to benchmarks/ingest.py; run `--help` for their options.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import threading
import time
import typing

import paho.mqtt.client
import paho.mqtt.enums
import paho.mqtt.packettypes
import paho.mqtt.properties

SESSION_EXPIRY_S = 3600


def _client(client_id: str) -> paho.mqtt.client.Client:
    return paho.mqtt.client.Client(
        paho.mqtt.enums.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.mqtt.client.MQTTv5,
    )


def _connect(client: paho.mqtt.client.Client, host: str, port: int, persistent: bool) -> None:
    properties = None
    if persistent:
        properties = paho.mqtt.properties.Properties(paho.mqtt.packettypes.PacketTypes.CONNECT)
        properties.SessionExpiryInterval = SESSION_EXPIRY_S
    client.connect(host, port, keepalive=60, clean_start=not persistent, properties=properties)


def publish(args: argparse.Namespace) -> int:
    messages: list[list[typing.Any]] = json.loads(args.spec.read_text())
    client = _client(args.client_id)
    client.max_inflight_messages_set(args.inflight)
    acked = threading.Event()
    state = {"acks": 0, "refused": 0}

    def on_publish(
        client: paho.mqtt.client.Client,
        userdata: object,
        mid: int,
        reason: typing.Any,
        props: object,
    ) -> None:
        state["acks"] += 1
        if reason is not None and getattr(reason, "is_failure", False):
            state["refused"] += 1
        if state["acks"] == len(messages):
            acked.set()

    client.on_publish = on_publish
    _connect(client, args.host, args.port, persistent=False)
    client.loop_start()
    try:
        if args.start_at:
            time.sleep(max(0.0, args.start_at - time.time()))
        sent: list[tuple[str, float]] = []
        for topic, payload, at in messages:
            delay = at - time.time()
            if delay > 0:
                time.sleep(delay)
            sent.append((topic, time.time()))
            client.publish(topic, payload, qos=1)
        if not acked.wait(args.timeout) and messages:
            print(f"error: {state['acks']}/{len(messages)} PUBACKs", file=sys.stderr)
            return 1
    finally:
        client.disconnect()
        client.loop_stop()
    if args.out:
        args.out.write_text(json.dumps({"sent": sent, "refused": state["refused"]}))
    return 0 if state["refused"] == 0 else 1


def subscribe(args: argparse.Namespace) -> int:
    client = _client(args.client_id)
    received: list[tuple[str, float]] = []
    cpu: list[float] = []
    done = threading.Event()
    subscribed = threading.Event()

    def on_connect(
        client: paho.mqtt.client.Client,
        userdata: object,
        flags: object,
        reason: object,
        props: object,
    ) -> None:
        client.subscribe(args.topic, qos=1)

    def on_subscribe(
        client: paho.mqtt.client.Client, userdata: object, mid: int, reasons: object, props: object
    ) -> None:
        subscribed.set()

    def on_message(
        client: paho.mqtt.client.Client, userdata: object, message: paho.mqtt.client.MQTTMessage
    ) -> None:
        received.append((message.topic, time.time()))
        cpu.append(time.process_time())  # process-wide: the CPU each message costs
        if len(received) >= args.expect:
            done.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    _connect(client, args.host, args.port, persistent=True)
    client.loop_start()
    try:
        if not subscribed.wait(15):
            print("error: no SUBACK from the broker", file=sys.stderr)
            return 1
        if args.ready:
            args.ready.write_text("ready")
        if args.expect > 0 and not done.wait(args.timeout):
            print(f"error: received {len(received)}/{args.expect}", file=sys.stderr)
    finally:
        properties = None
        if args.end_session:
            properties = paho.mqtt.properties.Properties(
                paho.mqtt.packettypes.PacketTypes.DISCONNECT
            )
            properties.SessionExpiryInterval = 0
        client.disconnect(properties=properties)
        client.loop_stop()
    if args.out:
        cpu_s = cpu[-1] - cpu[0] if len(cpu) > 1 else 0.0
        args.out.write_text(json.dumps({"received": received, "cpu_s": cpu_s}))
    return 0 if len(received) >= args.expect else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pub = commands.add_parser("publish", help="publish pre-generated messages at QoS 1")
    pub.add_argument(
        "--spec",
        type=pathlib.Path,
        required=True,
        help="JSON [[topic, payload, at]]: `at` is the unix time to send at (0: at once)",
    )
    pub.add_argument("--start-at", type=float, default=0, help="unix time to begin at")
    pub.add_argument("--inflight", type=int, default=100, help="unacknowledged messages")
    pub.add_argument("--timeout", type=float, default=300)
    sub = commands.add_parser("subscribe", help="the bare paho subscriber (persistent session)")
    sub.add_argument("--topic", required=True, help="e.g. $share/bench/roomproof/v1/+/+/proof")
    sub.add_argument("--expect", type=int, default=0, help="0: subscribe and leave")
    sub.add_argument("--timeout", type=float, default=300)
    sub.add_argument("--ready", type=pathlib.Path, help="file written once subscribed")
    sub.add_argument(
        "--end-session", action="store_true", help="end the broker session when leaving"
    )
    for command in (pub, sub):
        command.add_argument("--host", default="127.0.0.1")
        command.add_argument("--port", type=int, required=True)
        command.add_argument("--client-id", required=True)
        command.add_argument("--out", type=pathlib.Path, help="JSON with the timestamps")
    args = parser.parse_args()
    sys.exit(publish(args) if args.command == "publish" else subscribe(args))


if __name__ == "__main__":
    main()
