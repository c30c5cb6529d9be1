"""Entry point of one worker process (started by the supervisor, never by hand).

`python -m ingress_sidecar.worker --config FILE --stream-id N --port P --listen-fd FD --ready-fd FD`.
The listening socket is the supervisor's, inherited as `--listen-fd`: the
worker never binds the port itself, so the port has exactly one owner.
The database URL comes in SYMPHONY_DATABASE_URL (never on the command line,
where `ps` would show its password). The worker writes one byte to the ready
pipe once it listens, so the supervisor knows when to report READY.
"""

from __future__ import annotations

import argparse
import os
import sys

from symphony.errors import EXIT_STARTUP, SymphonyError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ingress_sidecar.worker")
    parser.add_argument("--config", default=None)
    parser.add_argument("--stream-id", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--listen-fd", type=int, default=-1)
    parser.add_argument("--ready-fd", type=int, default=-1)
    args = parser.parse_args(argv)

    from ingress_sidecar.config import load
    from symphony.lifecycle import configure_logging, run

    settings = load(args.config)
    configure_logging("sidecar", settings.log_level)
    database_url = os.environ.get("SYMPHONY_DATABASE_URL", "")

    from ingress_sidecar.server import Worker

    def on_ready() -> None:
        if args.ready_fd >= 0:
            os.write(args.ready_fd, b"r")
            os.close(args.ready_fd)

    async def start() -> int:
        worker = Worker(settings, stream_id=args.stream_id, port=args.port, database_url=database_url,
                        listen_fd=args.listen_fd)
        return await worker.run(on_ready)

    try:
        return run(start)
    except SymphonyError as exc:
        print(f"symphony sidecar worker {args.stream_id}: error: {exc.reason}", file=sys.stderr)
        return exc.exit_code if exc.exit_code else EXIT_STARTUP


if __name__ == "__main__":
    sys.exit(main())
