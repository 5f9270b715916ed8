"""A worker program shaped like the tutorial's, using only the tutorial library's API.

The tutorial hard-codes its Redis host, queue, lease and work time; this one reads them from the
environment so a test can point it at its own server and queue. Everything else is the tutorial's
loop.
"""

import os
import time

import rediswq

host = os.environ.get("TUTORIAL_REDIS_HOST", "redis")
port = int(os.environ.get("TUTORIAL_REDIS_PORT", "6379"))
queue = os.environ.get("TUTORIAL_QUEUE", "job2")
lease_secs = float(os.environ.get("TUTORIAL_LEASE_SECONDS", "10"))
work_secs = float(os.environ.get("TUTORIAL_WORK_SECONDS", "0.01"))

q = rediswq.RedisWQ(name=queue, host=host, port=port)
print("Worker with sessionID: " + q.sessionID())
print("Initial queue state: empty=" + str(q.empty()))
while not q.empty():
    item = q.lease(lease_secs=lease_secs, block=True, timeout=2)
    if item is not None:
        itemstr = item.decode("utf-8")
        print("Working on " + itemstr)
        time.sleep(work_secs)
        q.complete(item)
    else:
        print("Waiting for work")
print("Queue empty, exiting")
