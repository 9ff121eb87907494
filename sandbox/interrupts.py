"""Ctrl-C while sbx runs a sandbox for its own work (a build's RUN step).

Such a sandbox runs in a session of its own, so the terminal's SIGINT reaches only sbx: sbx
must kill the sandbox (its PID 1: the kernel then kills everything in its pid namespace) and
reap it before the interrupt goes on, so that nothing is left running and no zombie is left to
init.  SIGINT is held from before the launch until the wait has begun, so that a Ctrl-C that
arrives while the launch returns cannot lose the sandbox's pid:

    p = SandboxProcess.launch(spec, hold=interrupts.HELD)   # runtime/process.py
    code = p.wait(forward=())   # the held Ctrl-C is raised here; p is killed and reaped first
"""
import signal

HELD = (signal.SIGINT,)
