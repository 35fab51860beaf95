"""The edge: the only code that knows websockets or HTTP.

* ``ws``       serving and drain; data frames handed to sessions as parsed
* ``session``  one socket: decode -> dispatch, auth, close
* ``state``    the session state table (one place, as h11)
* ``inbox``    the request queue with its water marks
* ``sink``     bounded write, corking, slow-consumer close: all the hub sees
* ``http``     the route table (``/healthz``, ``/metrics``)
* ``wsframe``  server frames built once, written to many sockets
"""
