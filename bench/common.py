"""Shared by the benchmarks: fixture speech and JSON output."""

from __future__ import annotations

import json
import os
import platform
import sys

ZH_TEXT = ("大家好，非常荣幸能够作为今天的面试官与各位见面。请先用三分钟做一个自我介绍，"
           "说说你过去的工作经历，以及你为什么想加入我们的团队。")
EN_TEXT = ("Hello everyone, it is a great honour to be your interviewer today. Please start with a short "
           "introduction, tell us about your previous work, and explain why you would like to join our team.")


def emit(name: str, figures: dict) -> None:
    payload = {"benchmark": name, "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
               **figures}
    json.dump(payload, sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")
