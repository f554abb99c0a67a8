"""Daemonize like a classic service: fork, setsid, fork; the grandchild writes its pid and sleeps.

Usage: python3 daemonize.py PIDFILE SECONDS
"""

import os
import sys
import time

if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        with open(sys.argv[1] + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(sys.argv[1] + ".tmp", sys.argv[1])  # readers never see an empty file
        time.sleep(float(sys.argv[2]))
    os._exit(0)
os.wait()
