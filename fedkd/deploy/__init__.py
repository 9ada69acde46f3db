"""Deployment helpers: TLS certificates and device keys, and SuperNode processes.

``fedkd.deploy.certs`` makes the CA, the SuperLink certificate and the SuperNode keys;
``fedkd.deploy.supernode`` runs a SuperNode with fast polling and, optionally, the warm
ClientApp executor of ``fedkd.deploy.warm``. The ServerApp's fast-polling grid is
``fedkd.server.grid``.
"""
