"""Load tests of SlotServe with locust: HTTP and gRPC users, load shapes and SLO exit codes.

    locust -f loadtests/locustfile.py --headless -u 6 -r 3 -t 1m --host http://127.0.0.1:3000

`images` makes the test images and checks every answer, `locustfile` holds the users and the
SLO check, `shapes` the ramp / steady / spike load shapes (SLOTSERVE_LOAD_SHAPE=...).
"""
