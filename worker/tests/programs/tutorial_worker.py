"""A worker program shaped like the tutorial's, using only the tutorial library's API.

The tutorial hard-codes its Redis host; this one reads host and port from the environment so the
test can point it at its own server. Everything else is the tutorial's loop.
"""

import os
import time

import rediswq

host = os.environ.get("TUTORIAL_REDIS_HOST", "redis")
port = int(os.environ.get("TUTORIAL_REDIS_PORT", "6379"))

q = rediswq.RedisWQ(name="job2", host=host, port=port)
print("Worker with sessionID: " + q.sessionID())
print("Initial queue state: empty=" + str(q.empty()))
while not q.empty():
    item = q.lease(lease_secs=10, block=True, timeout=2)
    if item is not None:
        itemstr = item.decode("utf-8")
        print("Working on " + itemstr)
        time.sleep(0.01)
        q.complete(item)
    else:
        print("Waiting for work")
print("Queue empty, exiting")
