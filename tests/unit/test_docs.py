"""The README and docs/*.md name only things that exist: commands, flags, env vars, paths, HTTP routes, make targets.

Every shell line of a ```bash block is split into commands (on ``&&``, ``|``, ``;``), and
- ``tumorbench ...`` walks click's command tree (each subcommand exists, each ``--flag`` is an option of it);
- ``experiments/compare.py ...`` / ``tumorbench compare ...`` are parsed by the study's argparse parser;
- ``make TARGET`` needs the target in the Makefile.
Anywhere in the text: ``TUMORBENCH_*`` variables must be read somewhere in the code, repository paths
(``serve/config.yaml``, ``bench/serve_load.py``, ...) must exist, and ``GET|POST /route`` and
``http://127.0.0.1:8000/route`` must be routes of the Serve app (imported, never started). No Ray starts.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
REPO_DIRS = ("serve", "bench", "experiments", "docs", "requirements", "scripts", "platform", "tests")
ROOT_FILES = ("cluster.yaml", "Makefile", "pyproject.toml", "LICENSE")
CODE_DIRS = ("platform", "serve", "bench", "experiments", "scripts")


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def shell_commands(markdown: str) -> list[list[str]]:
    """Commands (token lists, env assignments removed) of every ```bash block."""
    commands = []
    for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", markdown, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().lstrip("(").rstrip(")")
            if not line or line.startswith("#"):
                continue
            try:
                tokens = shlex.split(line, comments=True)
            except ValueError:  # an unbalanced quote in prose-like lines: check nothing rather than guess
                continue
            current: list[str] = []
            for token in [*tokens, "&&"]:
                if token in ("&&", "||", "|", ";", "&"):
                    while current and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", current[0]):
                        current.pop(0)
                    if current:
                        commands.append(current)
                    current = []
                else:
                    current.append(token)
    return commands


def _all_commands() -> list[tuple[str, list[str]]]:
    return [(p.name, c) for p in DOCS for c in shell_commands(_text(p))]


def _compare_args(command: list[str]) -> list[str] | None:
    """The arguments a documented command gives the comparison study's parser, or None if it is not one."""
    if command[:2] == ["tumorbench", "compare"]:
        return command[2:]
    for i, token in enumerate(command):
        if token.endswith("experiments/compare.py"):
            args = command[i + 1 :]
            return args[1:] if args[:1] == ["--"] else args
    return None


def test_docs_have_commands_to_check():
    tools = {c[0] for _, c in _all_commands()}
    assert {"tumorbench", "python", "serve", "curl", "make"} <= tools


def _click_options(command: click.Command) -> set[str]:
    return {name for p in command.params for name in (*p.opts, *p.secondary_opts)} | {"--help", "-h"}


def test_every_tumorbench_subcommand_and_flag_exists():
    from tumorbench.cli import main

    checked = 0
    for doc, command in _all_commands():
        if command[0] != "tumorbench" or command[:2] == ["tumorbench", "compare"]:
            continue
        node, rest = main, command[1:]
        while isinstance(node, click.Group) and rest and not rest[0].startswith("-"):
            assert rest[0] in node.commands, f"{doc}: `{shlex.join(command)}`: no subcommand {rest[0]!r}"
            node, rest = node.commands[rest[0]], rest[1:]
        options = _click_options(node)
        for token in rest:
            if token.startswith("-") and token not in ("-", "--"):
                flag = token.split("=", 1)[0]
                assert flag in options, f"{doc}: `{shlex.join(command)}`: {node.name} has no option {flag}"
        checked += 1
    assert checked >= 10


def test_every_compare_command_line_parses():
    from tumorbench.study.cli import parse_args

    checked = 0
    for doc, command in _all_commands():
        args = _compare_args(command)
        if args is None:
            continue
        try:
            parse_args([a for a in args if a != "..."])
        except SystemExit:
            pytest.fail(f"{doc}: `{shlex.join(command)}` is refused by the compare parser")
        checked += 1
    assert checked >= 6


def test_every_make_target_exists():
    makefile = _text(ROOT / "Makefile")
    targets = set(re.findall(r"^([\w-]+):", makefile, flags=re.M))
    for doc, command in _all_commands():
        if command[0] == "make":
            for target in command[1:]:
                assert target in targets, f"{doc}: make {target}: no such target"


def test_every_env_var_is_read_by_the_code():
    code = "\n".join(
        _text(p)
        for d in CODE_DIRS
        for p in (ROOT / d).rglob("*")
        if p.is_file() and p.suffix in (".py", ".yaml", ".sh")
    )
    code += _text(ROOT / "Makefile")
    for path in DOCS:
        for name in sorted(set(re.findall(r"\bTUMORBENCH_[A-Z_]+\b", _text(path)))):
            assert name in code, f"{path.name} names {name}, which no code reads"


def test_every_repository_path_exists():
    pattern = re.compile(rf"(?<![\w./~-])((?:{'|'.join(REPO_DIRS)})/[\w.-]+(?:/[\w.-]+)*)")
    for path in DOCS:
        text = _text(path)
        named = {m.rstrip(".") for m in pattern.findall(text)}
        named |= {f for f in ROOT_FILES if re.search(rf"(?<![\w/.-]){re.escape(f)}\b", text)}
        missing = sorted(n for n in named if not (ROOT / n).exists())
        assert not missing, f"{path.name} names paths that do not exist: {missing}"


def _routes(routes) -> set[tuple[str, str]]:
    found = set()
    for route in routes:
        if hasattr(route, "original_router"):  # Serve's ingress includes the class's router
            found |= _routes(route.original_router.routes)
        elif hasattr(route, "path"):
            found |= {(method, route.path) for method in (getattr(route, "methods", None) or {"GET"})}
    return found


def _served_routes() -> set[tuple[str, str]]:
    from tumorbench.serving.app import api

    return _routes(api.routes)


def test_every_http_endpoint_is_a_route_of_the_serve_app():
    routes = _served_routes()
    paths = {p for _, p in routes}
    checked = 0
    for path in DOCS:
        text = _text(path)
        for method, route in re.findall(r"\b(GET|POST|PUT|DELETE) (/[\w/.{}-]*)", text):
            assert (method, route) in routes, f"{path.name}: {method} {route} is not a route of the Serve app"
            checked += 1
        for route in re.findall(r"http://127\.0\.0\.1:8000(/[\w/.-]+)", text):
            assert route in paths, f"{path.name}: {route} is not a route of the Serve app"
            checked += 1
    assert checked >= 5


def test_the_checker_catches_what_it_should():
    # The extraction itself: env assignments dropped, && split, continuation lines joined, comments removed.
    block = (
        "```bash\nFOO=1 tumorbench data check x --json && make demo  # note\n"
        "tumorbench train --task a \\\n  --lr 1\n```"
    )
    assert shell_commands(block) == [
        ["tumorbench", "data", "check", "x", "--json"],
        ["make", "demo"],
        ["tumorbench", "train", "--task", "a", "--lr", "1"],
    ]
    assert _compare_args(["ray", "submit", "cluster.yaml", "experiments/compare.py", "--", "--preset", "full"]) == [
        "--preset",
        "full",
    ]
    from tumorbench.cli import main

    assert "--no-such-flag" not in _click_options(main.commands["data"].commands["check"])
