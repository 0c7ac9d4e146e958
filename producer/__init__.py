"""reqworker's producer side: enqueue request jobs, follow batches, read results.

Importable without the worker's dependencies (requests, requests-cache)::

    from producer import Client

    client = Client.from_env()
    report = client.submit_many(jobs, name="nightly")
    report.batch.wait()
    for record in report.batch.results():
        ...
"""

from producer.chunks import Rejected
from producer.client import Batch, Client, Counts, EnqueueInterrupted, SubmitReport

__all__ = ["Batch", "Client", "Counts", "EnqueueInterrupted", "Rejected", "SubmitReport"]
