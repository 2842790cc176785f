"""``python -m webhook_verify --secret-env NAME [--host H] [--port P] [--tolerance S]``: run the example
receiver (``receiver.py``); each verified delivery is printed as one JSON line."""

from __future__ import annotations

import argparse
import json
import os
import sys

from webhook_verify.receiver import make_server


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m webhook_verify", description=__doc__)
    p.add_argument("--secret-env", required=True, help="the environment variable holding the shared secret")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8099)
    p.add_argument("--tolerance", type=float, default=300, help="seconds of clock difference accepted")
    args = p.parse_args(argv)
    secret = os.environ.get(args.secret_env, "")
    if not secret:
        print(f"the environment variable {args.secret_env} is empty", file=sys.stderr)
        return 2

    def show(delivery: dict[str, object]) -> None:
        print(json.dumps(delivery), flush=True)

    server = make_server(secret, args.host, args.port, show, args.tolerance)
    print(f"listening on http://{args.host}:{server.server_port}/", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
