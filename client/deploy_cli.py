"""``fedkd keys`` and ``fedkd supernode``: the operator's side of a Flower deployment.

``fedkd keys ca|server|device`` creates the certificate authority, the SuperLink's TLS
certificate and per-device SuperNode authentication keys (``cryptography`` only, no
openssl). ``fedkd supernode`` runs Flower's ``flower-supernode`` with fedkd's fast-round
settings: short polling and a warm ClientApp executor that keeps torch loaded between
messages (see ``docs/deploy.md``).
"""

from __future__ import annotations

import argparse
import sys

from fedkd.config import ConfigError


def _cmd_keys(args: argparse.Namespace) -> int:
    from fedkd.deploy import certs

    try:
        if args.kind == "ca":
            paths = certs.make_ca(args.out, days=args.days, force=args.force)
            written = [paths.cert, paths.key]
        elif args.kind == "server":
            paths = certs.make_server_cert(
                args.out, args.san, ca_dir=args.ca_dir, days=args.days, force=args.force
            )
            written = [paths.cert, paths.key]
        else:
            paths = certs.make_device_key(args.name, args.out, force=args.force)
            written = [paths.key, paths.cert]
    except certs.CertError as err:
        raise ConfigError(str(err)) from err
    for path in written:
        sys.stdout.write(f"{path}\n")
    return 0


def _cmd_supernode(args: argparse.Namespace) -> int:
    import logging

    from fedkd.deploy.supernode import run_supernode

    logging.getLogger("flwr").setLevel(logging.INFO)  # the node's progress, as flower-supernode

    flower_args = list(args.flower_args)
    if flower_args and flower_args[0] == "--":
        flower_args = flower_args[1:]
    if "--insecure" in flower_args:
        sys.stderr.write(
            "fedkd: WARNING: --insecure: the SuperNode talks to the SuperLink in plaintext; "
            "use TLS (--root-certificates) outside a test bench\n"
        )
    if any(a == "--isolation" or a.startswith("--isolation=") for a in flower_args):
        raise ConfigError("fedkd supernode sets --isolation itself; drop it (or use --cold)")
    return run_supernode(
        flower_args,
        poll_interval=args.poll_interval,
        warm=not args.cold,
        heartbeat_interval=args.heartbeat_interval,
    )


def _add_keys(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser(
        "keys", help="create TLS certificates and SuperNode keys for a deployment"
    )
    kinds = keys.add_subparsers(dest="kind", required=True)
    ca = kinds.add_parser("ca", help="a certificate authority: ca.crt, ca.key")
    server = kinds.add_parser(
        "server", help="the SuperLink's TLS certificate (server.pem, server.key), signed by the CA"
    )
    server.add_argument(
        "--san",
        action="append",
        default=[],
        required=True,
        help="an IP address or DNS name the SuperLink is reached at (repeatable)",
    )
    server.add_argument(
        "--ca-dir", help="directory with ca.crt and ca.key (default: the --out directory)"
    )
    device = kinds.add_parser(
        "device", help="a SuperNode key pair: NAME (OpenSSH EC P-384 private key), NAME.pub"
    )
    device.add_argument("name", help="file name of the private key; the public key is NAME.pub")
    for p in (ca, server, device):
        p.add_argument("--out", required=True, help="output directory")
        p.add_argument("--force", action="store_true", help="overwrite existing files")
        p.set_defaults(func=_cmd_keys)
    for p in (ca, server):
        p.add_argument("--days", type=int, default=365, help="validity in days (default 365)")


def _add_supernode(sub: argparse._SubParsersAction) -> None:
    node = sub.add_parser(
        "supernode",
        help="run flower-supernode with fast polling and a warm ClientApp process",
        description=(
            "Runs Flower's flower-supernode with the given flags, plus: SuperLink polling "
            "every --poll-interval seconds instead of 3, and (unless --cold) a warm ClientApp "
            "executor that imports torch once and forks a fresh ClientApp process per "
            "message. Put flower-supernode's flags after '--'."
        ),
    )
    node.add_argument(
        "--poll-interval",
        type=float,
        default=0.2,
        help="seconds between polls of the SuperLink and of the node's task queue (default 0.2)",
    )
    node.add_argument(
        "--heartbeat-interval",
        type=float,
        help=(
            "seconds between heartbeats (>= 10; Flower's default 30). The SuperLink lets a "
            "crashed node rejoin with the same key two intervals after its last heartbeat"
        ),
    )
    node.add_argument(
        "--cold",
        action="store_true",
        help="no warm executor: Flower's own flwr-clientapp process per message",
    )
    node.add_argument(
        "flower_args", nargs=argparse.REMAINDER, help="flower-supernode flags (after --)"
    )
    node.set_defaults(func=_cmd_supernode)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``keys`` and ``supernode`` to the ``fedkd`` command line."""
    _add_keys(sub)
    _add_supernode(sub)
