"""Process signals: SIGTERM handled as Ctrl-C, so that what stops on Ctrl-C stops cleanly on it too."""
import contextlib
import signal
import threading


@contextlib.contextmanager
def sigterm_as_ctrl_c():
    """Within the block, SIGTERM (a cluster's time limit, a service manager, `kill`) raises
    KeyboardInterrupt as Ctrl-C does: a training keeps its last checkpoint and its data workers
    are cleaned up, the web app queues its running jobs again (Python's default would end the
    process on the spot). Only the main thread can handle signals; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(*_):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
