"""Deployment helpers: TLS certificates and device keys, and processes of a deployment.

``fedkd.deploy.certs`` makes the CA, the SuperLink certificate and the SuperNode keys;
``fedkd.deploy.procs`` runs SuperLink/SuperNode processes (fast polling, a warm ClientApp
executor) and holds the ServerApp's fast-polling grid.
"""
