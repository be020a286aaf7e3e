"""Shared state has one owner: every Redis key is built in core/keys.py (RQ's through RQ's own APIs),
routers and workers reach Redis only through stores and services, and records are turned into JSON
and back only in their stores."""

from __future__ import annotations

import ast
import re

from conftest import ROOT

APP_DIRS = ("api", "core", "workers", "avatars", "models")
COMMANDS = {"get", "set", "setnx", "mget", "hget", "hset", "hsetnx", "hgetall", "hmget", "hdel", "hvals", "hscan_iter",
            "exists", "delete", "expire", "ttl", "incr", "eval", "pipeline", "ping", "lrange", "llen", "lindex", "lmove",
            "lrem", "rpush", "ltrim", "sadd", "srem", "smembers", "scan_iter", "xadd", "xread", "xrevrange", "zcard",
            "publish", "lock"}
CLIENT = re.compile(r"(^|\.)(a?redis|feeds|r|connection|conn)$")


def _sources(*dirs: str):
    for name in dirs:
        for path in sorted((ROOT / name).rglob("*.py")):
            if ".venv" not in path.parts:
                yield path, ast.parse(path.read_text(), str(path))


def _literal_prefix(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        return str(node.values[0].value)
    return None


def test_redis_keys_are_built_in_the_keys_module():
    found = []
    for path, tree in _sources(*APP_DIRS):
        if path == ROOT / "core" / "keys.py":
            continue
        for node in ast.walk(tree):
            text = _literal_prefix(node)
            if text is not None and text.startswith(("mtl:", "rq:")):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {text!r}")
    assert not found, "Redis keys formatted outside core/keys.py:\n" + "\n".join(found)


# The RQ worker class itself drives RQ's registries and job retries through RQ's own pipelines.
RQ_PLUMBING = {"workers/base.py"}


def test_routers_and_workers_never_call_redis():
    found = []
    for path, tree in _sources("api/routers", "workers"):
        if str(path.relative_to(ROOT)) in RQ_PLUMBING:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in COMMANDS and CLIENT.search(ast.unparse(node.value)):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "Redis client calls in api/routers or workers (use a store or a service):\n" + "\n".join(found)


# Modules that own a record kind in Redis and alone turn it into JSON and back.
STORES = {"core/rooms.py", "core/conversations/store.py", "core/interviews/store.py"}
READS = {"get", "hget", "hgetall", "hmget", "hvals", "lrange", "lindex", "lmove", "lpop", "rpop", "xread", "xrevrange"}
WRITES = {"set", "setnx", "hset", "hsetnx", "rpush", "lpush", "xadd", "eval"}


def test_records_are_serialised_only_in_their_stores():
    """No `json.loads` of a Redis read and no Redis write of a `json.dumps` outside the stores:
    everyone else reads and writes typed records through a store."""
    found = []
    for path, tree in _sources(*APP_DIRS):
        if str(path.relative_to(ROOT)) in STORES:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            args = [*node.args, *(k.value for k in node.keywords)]
            reads = [a for a in args if isinstance(a, ast.Call) and isinstance(a.func, ast.Attribute)
                     and a.func.attr in READS]
            if ast.unparse(node.func) == "json.loads" and reads:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)[:90]}")
            if isinstance(node.func, ast.Attribute) and node.func.attr in WRITES and CLIENT.search(
                    ast.unparse(node.func.value)) and any(
                    isinstance(a, ast.Call) and ast.unparse(a.func) == "json.dumps" for a in args):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)[:90]}")
    assert not found, "records serialised outside their stores:\n" + "\n".join(found)
