import logging
import os
import sys

from bench.cli import main

if __name__ == "__main__":
    code = main()
    if code == 130:
        # Ctrl-C: the workers are stopped and every finished row is already on disk (written atomically).
        # Leave at once rather than through the interpreter's shutdown (atexit handlers, joins of threads
        # and processes started by libraries), which must never keep an interrupted command waiting.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    raise SystemExit(code)
