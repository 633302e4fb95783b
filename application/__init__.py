"""The use cases: what happens to an attempt, a submission and the outbox, decided
from what the ledger holds. They take plain values and ports (application/ports.py)
and return plain values that say what to do; the adapters in consumers/ and gateway/
do the I/O those name. Nothing here speaks AMQP, HTTP or SQL."""
