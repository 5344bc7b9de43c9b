"""A small reader of our Dockerfiles and of .dockerignore, for the image checks."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from tests.deploy.manifests import PROJECT_ROOT

DOCKER_DIR = PROJECT_ROOT / "docker"
# The image each Dockerfile builds, as the manifests name it.
IMAGES = {
    "edgepm/agent": DOCKER_DIR / "agent.Dockerfile",
    "edgepm/control-plane": DOCKER_DIR / "control-plane.Dockerfile",
}


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction with continuation lines joined."""

    keyword: str
    arguments: str
    line: int


@dataclass
class Stage:
    """The instructions from one FROM to the next."""

    base: str
    name: str | None
    line: int
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        """Return the stage's instructions with this keyword, in order."""
        return [item for item in self.instructions if item.keyword == keyword]


def read_instructions(path: Path) -> list[Instruction]:
    """Parse a Dockerfile into instructions; comments and blank lines are dropped."""
    instructions = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        text = " ".join(part for part in pending if part)
        pending = []
        keyword, _, arguments = text.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
    return instructions


@cache
def read_stages(path: Path) -> tuple[Stage, ...]:
    """Split a Dockerfile into its build stages."""
    stages: list[Stage] = []
    for instruction in read_instructions(path):
        if instruction.keyword == "FROM":
            words = instruction.arguments.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name, instruction.line))
        elif stages:
            stages[-1].instructions.append(instruction)
    return tuple(stages)


def exec_form(instruction: Instruction) -> list[str]:
    """Return the JSON (exec) form of CMD or ENTRYPOINT as a list."""
    value = json.loads(instruction.arguments)
    if not isinstance(value, list):
        raise ValueError(
            f"line {instruction.line}: {instruction.keyword} is not a JSON list"
        )
    return [str(item) for item in value]


def image_cmd(image: str) -> list[str] | None:
    """Return the CMD of the final stage of one of our images, or None."""
    path = IMAGES.get(image)
    if path is None:
        return None
    commands = read_stages(path)[-1].all("CMD")
    return exec_form(commands[-1]) if commands else None


def shell_commands(instruction: Instruction) -> list[list[str]]:
    """Split a RUN instruction into its commands, each as a word list."""
    commands = []
    for part in re.split(r"&&|;|\|\|", instruction.arguments):
        words = shlex.split(part)
        if words:
            commands.append(words)
    return commands


def ignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """Return .dockerignore's rules as (is_exception, regex), in file order."""
    rules = []
    path = PROJECT_ROOT / ".dockerignore"
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = line[1:] if exception else line
        rules.append((exception, re.compile(_pattern_regex(pattern.strip("/")))))
    return rules


def _pattern_regex(pattern: str) -> str:
    # The matching of Docker's .dockerignore: ** spans directories, * and ? stay
    # within one path element, and a pattern that matches a directory matches
    # everything below it.
    out = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out.append("(?:.*/)?")
            index += 3
        elif pattern.startswith("**", index):
            out.append(".*")
            index += 2
        elif pattern[index] == "*":
            out.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            out.append("[^/]")
            index += 1
        else:
            out.append(re.escape(pattern[index]))
            index += 1
    return "^" + "".join(out) + "(?:/.*)?$"


def is_in_build_context(relative: str) -> bool:
    """Tell whether .dockerignore keeps a path (relative to the root) in the context."""
    included = True
    for exception, regex in ignore_patterns():
        if regex.match(relative):
            included = exception
    return included
