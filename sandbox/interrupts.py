"""Ctrl-C while sbx runs a sandbox for its own work (a build's RUN step).

Such a sandbox runs in a session of its own, so the terminal's SIGINT reaches only sbx: sbx
must kill the sandbox (its PID 1: the kernel then kills everything in its pid namespace) and
reap it before the interrupt goes on, so that nothing is left running and no zombie is left to
init.  SIGINT is held from before the launch until the wait has begun, so that a Ctrl-C that
arrives while the launch returns cannot lose the sandbox's pid."""
import os
import signal

_HELD = {signal.SIGINT}


def start_and_wait(start):
    """Call start() -> (pid, pidfd) and wait for that sandbox; return its wait status.  On any
    exception once it is launched (KeyboardInterrupt), it is killed and reaped first."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)
    try:
        pid, pidfd = start()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        raise
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)  # a Ctrl-C held meanwhile is raised here
        return os.waitpid(pid, 0)[1]
    except BaseException:
        _kill_and_reap(pid)
        raise
    finally:
        if pidfd >= 0:
            os.close(pidfd)


def _kill_and_reap(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    while True:
        try:
            os.waitpid(pid, 0)
            return
        except ChildProcessError:
            return
        except KeyboardInterrupt:  # a second Ctrl-C: the reap is quick, finish it
            continue
