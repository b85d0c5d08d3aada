"""The stream join: usage events joined with finalized chain state into accruals or rejects.

`stream.join` is the pure core (no Kafka, faust or database); `stream.state` is the port it
reads chain state through; `stream.sinks` holds the adapters that store its outputs, and
`stream.embedded` drives core and sinks in one process without Kafka.
"""
