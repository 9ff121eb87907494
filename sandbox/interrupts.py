"""Ctrl-C while sbx waits for a sandbox it started for its own work (a build's RUN step).

Such a sandbox runs in a session of its own, so the terminal's SIGINT reaches only sbx: when
the wait is interrupted, sbx kills the sandbox (its PID 1: the kernel then kills everything in
its pid namespace) and reaps it before the interrupt goes on, so nothing is left running and
no zombie is left to init."""
import os
import signal


def wait(pid):
    """os.waitpid(pid, 0)'s status; on any exception (KeyboardInterrupt), kill and reap first."""
    try:
        return os.waitpid(pid, 0)[1]
    except BaseException:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        while True:
            try:
                os.waitpid(pid, 0)
                break
            except ChildProcessError:
                break
            except KeyboardInterrupt:  # a second Ctrl-C: the reap is quick, finish it
                continue
        raise
