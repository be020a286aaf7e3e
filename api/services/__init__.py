"""Logic shared by several routers. Services raise domain errors (core/errors.py), never HTTP
ones, and never import a router: api/errors.py turns their errors into responses."""
