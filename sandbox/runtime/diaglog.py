"""One line appended to a helper process's own log (the monitor's, the network holder's, the
user-namespace keeper's): a time, the pid, the message.  Never raises: a log that cannot be
written must not fail what it describes."""
import os
import time


def append(path, msg):
    try:
        with open(path, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} [{os.getpid()}] {msg}\n")
    except OSError:
        pass
