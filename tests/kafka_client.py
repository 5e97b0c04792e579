#!/usr/bin/env python3
"""External Kafka client for the end-to-end tests (Python confluent-kafka, not the product's
librdkafka build): produces one record, or reads a topic from the beginning and prints each
record as a JSON line."""

import argparse
import json
import sys
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition


def produce(args):
    value = sys.stdin.buffer.read()
    producer = Producer({"bootstrap.servers": args.brokers, "enable.idempotence": True, "acks": "all"})
    errors = []
    positions = []

    def delivered(err, msg):
        if err is not None:
            errors.append(err)
        else:
            positions.append(f"{msg.topic()}@{msg.partition()}:{msg.offset()}")

    producer.produce(args.topic, key=args.key.encode(), value=value,
                     headers=[("content-type", b"application/cloudevents+json; charset=UTF-8")],
                     on_delivery=delivered)
    remaining = producer.flush(30)
    if remaining or errors:
        print(f"delivery failed: {errors or 'timeout'}", file=sys.stderr)
        return 1
    # Where the broker stored the record, as a consistency token.
    print(positions[0])
    return 0


def consume(args):
    consumer = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": f"e2e-reader-{time.time_ns()}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
    })
    metadata = consumer.list_topics(args.topic, timeout=10)
    partitions = list(metadata.topics[args.topic].partitions.keys())
    consumer.assign([TopicPartition(args.topic, p, 0) for p in partitions])
    records = []
    deadline = time.monotonic() + args.timeout
    eof = set()
    while time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is None:
            if len(records) >= args.min and len(eof) >= len(partitions):
                break
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                eof.add(msg.partition())
                if len(records) >= args.min and len(eof) >= len(partitions):
                    break
                continue
            print(f"consume error: {msg.error()}", file=sys.stderr)
            continue
        eof.discard(msg.partition())
        records.append({
            "topic": msg.topic(),
            "partition": msg.partition(),
            "offset": msg.offset(),
            "key": msg.key().decode("utf-8", "replace") if msg.key() is not None else None,
            "value": msg.value().decode("utf-8", "replace") if msg.value() is not None else None,
            "headers": {k: (v.decode("utf-8", "replace") if v is not None else "") for k, v in (msg.headers() or [])},
        })
    consumer.close()
    for r in records:
        print(json.dumps(r))
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("produce")
    p.add_argument("--brokers", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--key", required=True)
    c = sub.add_parser("consume")
    c.add_argument("--brokers", required=True)
    c.add_argument("--topic", required=True)
    c.add_argument("--min", type=int, default=0)
    c.add_argument("--timeout", type=float, default=20.0)
    args = parser.parse_args()
    return produce(args) if args.command == "produce" else consume(args)


if __name__ == "__main__":
    sys.exit(main())
