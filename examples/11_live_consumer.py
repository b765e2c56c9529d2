"""The live reconstruction as a separate consumer of a document stream (``pxm live-consumer --zmq HOST:PORT
--once``): a RunEngine publishes its documents to a bluesky 0MQ proxy, the consumer reconstructs while
frames arrive and publishes previews and the final result to /processed.

Here the "RunEngine" is the recording of 01's Bragg scan (DATA_DIR/documents/<uid>.jsonl) sent through the
proxy document by document, as the beamline's RunEngine sent them during the scan.

Run: ``python examples/11_live_consumer.py [WORK_DIR]`` (reuses 01's runs in WORK_DIR, else simulates).
"""

# %%
import threading
import time

from _beamtime import small_beamtime, work_dir
from bluesky.callbacks.zmq import Proxy

import pxm
from pxm.catalog import free_port
from pxm.live import jsonl_documents
from pxm.transport import ZmqPublisher

work = work_dir()
server, uids = small_beamtime(work)
recording = work / "data" / "documents" / f"{uids['bragg_ptychography']}.jsonl"

with server:
    client = server.client()

    # %% A 0MQ proxy (at a beamline: `bluesky-0MQ-proxy IN OUT` on the control machine)
    port_in, port_out = free_port(), free_port()
    threading.Thread(target=Proxy(port_in, port_out).start, daemon=True).start()

    # %% The consumer: blocks until the first Bragg run's final result, so it runs in a thread here
    summaries: list = []
    consumer = threading.Thread(target=lambda: summaries.extend(
        pxm.live_consumer(zmq=f"127.0.0.1:{port_out}", client=client, timeout_s=600)), daemon=True)
    consumer.start()

    # %% The documents go out as the RunEngine sent them. 0MQ drops what is sent before a connection is up
    # ("slow joiner"): the publisher waits a moment for the proxy and the consumer's subscription first.
    with ZmqPublisher(f"127.0.0.1:{port_in}") as publisher:
        time.sleep(3.0)
        for name, doc in jsonl_documents(recording):
            publisher(name, doc)
        consumer.join(timeout=600)
    if consumer.is_alive():
        raise SystemExit("no final result within 600 s: the consumer missed the run's start document (0MQ slow "
                         "joiner on a busy machine?); run the example again")

    for s in summaries:
        m = s["metrics"]
        print(f"live: run {s['uid'][:8]}: {m['n_frames_used']} of {m['n_frames_measured']} frames used, "
              f"{m['n_iterations']} iterations; final result /processed/{s['final_key']}")
    final = client["processed"][summaries[-1]["final_key"]]
    print(f"read back: object {final['object'].shape}, status {final.metadata['status']}")
