"""The README runs as written: it is the user's door, and a command that fails there is a bug.

Every shell block of README.md is split into commands, and each command is checked against the
repository as it is:

* `make X` names a real target (and `VAR=value` a real variable); what the target runs writes
  nowhere git tracks (`make -n`);
* `.venv/bin/python -m MODULE [VERB] --flag ...` names a real module, sub-command and flags
  (each found in that command's own `--help`, run for real); `training train` overrides load
  into a valid config; the same for locust, bentoml, curl's routes and Prometheus's tools;
* no bare `python` or `pip` (a fresh shell has no activated environment);
* every path a command reads is tracked by git or written by an earlier command, and every
  path it writes is ignored by git, so `git status` stays clean after the examples;
* `SLOTSERVE_*` variables and the settings table match `service/settings.py`;
* Python blocks compile and import what exists; local links and images resolve;
* the README stays short.

The checker is tested too: broken commands fed to it must each be reported.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = [README, *sorted((REPO / "docs").glob("*.md"))]
MAX_LINES = 360


SHELL_BLOCK = re.compile(r"^```(?:bash|sh|shell)\n(.*?)^```", re.S | re.M)
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
CODE_BLOCK = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
ENV_ASSIGN = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
SEPARATORS = {"&&", "||", ";", "|", "&"}
REDIRECTS = {">", ">>"}

PYTHON = ".venv/bin/python"
OUTPUT_FLAGS = {"--out", "--csv", "-o", "--output", "--storage.tsdb.path", "--cache-dir"}
OUTPUT_OVERRIDES = ("run.out_dir",)
WRITES_INTO = {("export", "tensorrt"): {"--bundle"}, ("export", "variants"): {"--bundle"}}
"""Sub-commands that write into the directory a flag names (plans, variants, the manifest)."""
BENTOML_ROUTES = {"/healthz", "/livez", "/readyz", "/metrics", "/docs", "/docs.json"}
CURL_VALUE_FLAGS = {"-F", "--form", "-o", "--output", "-X", "-H", "-d", "--data"}


@dataclass
class Command:
    text: str
    env: dict[str, str]
    argv: list[str]
    redirects: list[str] = field(default_factory=list)


@dataclass
class Check:
    """What checking a README found: problems (the test fails on them) and missing tools."""

    problems: list[str] = field(default_factory=list)
    missing_tools: set[str] = field(default_factory=set)
    produced: list[str] = field(default_factory=list)

    def fail(self, cmd: Command, why: str) -> None:
        self.problems.append(f"`{cmd.text}`: {why}")


# ---------------------------------------------------------------- parsing the README


def shell_commands(markdown: str) -> list[Command]:
    """Every command of every shell block, continuation lines joined, comments dropped."""
    commands = []
    for block in SHELL_BLOCK.findall(markdown):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            if line:
                commands += split_line(line)
    return commands


def split_line(line: str) -> list[Command]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, ""
    try:
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes: not a command this test can read, so flag it
        tokens = ["<unparsable>", line]
    commands, words = [], []
    for token in [*tokens, ";"]:
        if token in SEPARATORS:
            if words:
                commands.append(to_command(words))
            words = []
        else:
            words.append(token)
    return commands


def to_command(words: list[str]) -> Command:
    env, i = {}, 0
    while i < len(words) and (m := ENV_ASSIGN.match(words[i])):
        env[m.group(1)] = m.group(2)
        i += 1
    argv, redirects, rest = [], [], words[i:]
    while rest:
        word = rest.pop(0)
        if word in REDIRECTS and rest:
            redirects.append(rest.pop(0))
        else:
            argv.append(word)
    return Command(shlex.join(words), env, argv, redirects)


def split_args(args: list[str], help_text: str) -> tuple[list[tuple[str, str | None]], list[str]]:
    """argv after the command -> ([(flag, value or None)], positionals), using the help text
    to tell flags that take a value (argparse shows a metavar after them) from switches."""
    flags, positionals = [], []
    while args:
        word = args.pop(0)
        if word.startswith("-") and len(word) > 1 and not word[1].isdigit():
            if "=" in word:
                flag, value = word.split("=", 1)
                flags.append((flag, value))
            elif (takes_value(word, help_text) or word in OUTPUT_FLAGS) and args:
                flags.append((word, args.pop(0)))
            else:
                flags.append((word, None))
        else:
            positionals.append(word)
    return flags, positionals


def takes_value(flag: str, help_text: str) -> bool:
    metavar = r"(?:\{[^}]*\}|<[^>]+>|[A-Z][A-Z0-9_]*)"
    return re.search(rf"(?<![\w-]){re.escape(flag)}[ =]{metavar}", help_text) is not None


def in_help(flag: str, help_text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text) is not None


def looks_like_path(value: str) -> bool:
    return "/" in value and "://" not in value and not value.startswith("-") and "$" not in value


def path_part(value: str) -> str:
    """`image=@runs/x.png` -> `runs/x.png`; `a.b=runs/x` -> `runs/x`."""
    return value.rsplit("=", 1)[-1].lstrip("@")


# ---------------------------------------------------------------- the repository's facts


@functools.cache
def makefile() -> tuple[set[str], set[str]]:
    text = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z0-9_-]+)\s*:(?!=)", text, re.M))
    variables = set(re.findall(r"^([A-Z_][A-Z0-9_]*)\s*[?:+]?=", text, re.M))
    return targets, variables


@functools.cache
def help_of(*argv: str) -> str | None:
    """A command's `--help`, run for real (None when the program is missing)."""
    if not (REPO / argv[0]).exists() and shutil.which(argv[0]) is None:
        return None
    res = subprocess.run([*argv, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    return res.stdout + res.stderr


@functools.cache
def locust_help(locustfile: str) -> str:
    """Locust answers --help before loading the locustfile, so its own options (SLOs, load
    shapes, gRPC target) are missing there: build the parser locust builds after loading it."""
    code = (
        "import runpy, sys; runpy.run_path(sys.argv[1]); "
        "from locust.argument_parser import get_parser; get_parser().print_help()"
    )
    res = subprocess.run(
        [PYTHON, "-c", code, locustfile], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    return res.stdout + res.stderr


def sub_commands(help_text: str) -> list[str]:
    """argparse shows sub-commands in its usage as a bare `{a,b,c} ...` (options' choices
    come after their flag, inside brackets)."""
    usage = help_text.split("\n\n", 1)[0]
    match = re.search(r"\{([\w,-]+)\}\s*\.\.\.", usage)
    return match.group(1).split(",") if match else []


@functools.cache
def tracked(path: str) -> bool:
    res = subprocess.run(
        ["git", "ls-files", "--", path], cwd=REPO, capture_output=True, text=True, check=True
    )
    return bool(res.stdout.strip())


@functools.cache
def ignored(path: str) -> bool:
    """Ignored by git, as a file or as a directory (`runs/` matches only a directory)."""
    for candidate in (path, path.rstrip("/") + "/"):
        res = subprocess.run(["git", "check-ignore", "-q", candidate], cwd=REPO)
        if res.returncode == 0:
            return True
    return False


@functools.cache
def routes() -> set[str]:
    found = set(BENTOML_ROUTES)
    for source in (REPO / "service").rglob("*.py"):
        text = source.read_text()
        found |= set(re.findall(r"route=\"(/[\w/.-]*)\"", text))
        found |= set(re.findall(r"Route\(\"(/[\w/.-]*)\"", text))
    return found


@functools.cache
def known_env() -> set[str]:
    from service.settings import Settings

    names = {f"SLOTSERVE_{name.upper()}" for name in Settings.model_fields}
    for folder in ("loadtests", "training", "export"):
        for source in (REPO / folder).rglob("*.py"):
            names |= set(re.findall(r"SLOTSERVE_[A-Z0-9_]+", source.read_text()))
    return names


# ---------------------------------------------------------------- checking commands


def check_readme(markdown: str) -> Check:
    check = Check()
    for cmd in shell_commands(markdown):
        check_command(cmd, check)
    return check


def check_command(cmd: Command, check: Check) -> None:
    for name, value in cmd.env.items():
        if name.startswith("SLOTSERVE_") and name not in known_env():
            check.fail(cmd, f"{name} is not a setting (service/settings.py) nor read by any tool")
        if looks_like_path(value):
            read(cmd, value, check)
    for path in cmd.redirects:
        write(cmd, path, check)
    if not cmd.argv:
        return
    program = cmd.argv[0]
    if re.fullmatch(r"(python|pip)[0-9.]*", program):
        check.fail(cmd, f"bare `{program}`: a fresh shell has no venv; use {PYTHON} -m ...")
        return
    handler = {
        "make": check_make,
        PYTHON: check_python,
        ".venv/bin/locust": check_locust,
        ".venv/bin/bentoml": check_bentoml,
        "curl": check_curl,
        "mkdir": check_mkdir,
        "rm": check_rm,
        "cp": check_cp,
        "prometheus": check_external,
        "promtool": check_external,
    }.get(program)
    if handler is None:
        check.fail(cmd, f"`{program}` is not a command this test knows; teach it how to check it")
    else:
        handler(cmd, check)


def read(cmd: Command, path: str, check: Check) -> None:
    path = path.rstrip("/")
    made = any(path == p or path.startswith(p + "/") for p in check.produced)
    if not made and not tracked(path):
        check.fail(cmd, f"reads {path}, which is neither in the repository nor made above")


def write(cmd: Command, path: str, check: Check) -> None:
    if path == "/dev/null":
        return
    if not ignored(path):
        check.fail(cmd, f"writes {path}, which git does not ignore (git status would change)")
    check.produced.append(path.rstrip("/"))


def check_paths(cmd, flags, positionals, check, outputs=frozenset()) -> None:
    for flag, value in flags:
        if value is None or "://" in value:
            continue
        if flag in OUTPUT_FLAGS | outputs:
            write(cmd, path_part(value), check)
        elif looks_like_path(path_part(value)):
            read(cmd, path_part(value), check)
    for word in positionals:
        key, _, value = word.partition("=")
        if key in OUTPUT_OVERRIDES:
            write(cmd, value, check)
        elif looks_like_path(path_part(word)):
            read(cmd, path_part(word), check)


def check_make(cmd: Command, check: Check) -> None:
    targets, variables = makefile()
    goals, assignments = [], []
    for word in cmd.argv[1:]:
        if (m := ENV_ASSIGN.match(word)) and m.group(1) not in variables:
            check.fail(cmd, f"the Makefile has no variable {m.group(1)}")
        elif m:
            assignments.append(word)
        elif word not in targets:
            check.fail(cmd, f"the Makefile has no target `{word}`")
        else:
            goals.append(word)
    for goal in goals:
        dry = subprocess.run(
            ["make", "-n", "--no-print-directory", *assignments, goal],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        for line in dry.stdout.replace("\\\n", " ").splitlines():
            for inner in split_line(re.sub(r"(^|\s)#.*$", "", line)):
                for path in inner.redirects:
                    write(cmd, path, check)
                flags, positionals = split_args(inner.argv[1:], help_text="")
                flags = [(f, v) for f, v in flags if f in OUTPUT_FLAGS]
                positionals = [p for p in positionals if p.split("=", 1)[0] in OUTPUT_OVERRIDES]
                check_paths(cmd, flags, positionals, check)


def check_python(cmd: Command, check: Check) -> None:
    argv = cmd.argv[1:]
    if len(argv) < 2 or argv[0] != "-m":
        check.fail(cmd, f"run a module: {PYTHON} -m PACKAGE VERB ...")
        return
    module, args = argv[1], argv[2:]
    if importlib.util.find_spec(module) is None:
        check.fail(cmd, f"no module {module}")
        return
    help_text = help_of(PYTHON, "-m", module)
    verbs = sub_commands(help_text)
    verb = None
    if verbs:
        if not args or args[0] not in verbs:
            check.fail(cmd, f"{module} has no sub-command {args[:1]} (it has {', '.join(verbs)})")
            return
        verb, args = args[0], args[1:]
        help_text = help_of(PYTHON, "-m", module, verb)
    flags, positionals = split_args(list(args), help_text)
    for flag, _ in flags:
        if not in_help(flag, help_text):
            check.fail(cmd, f"`{flag}` is not an option of {module} {verb or ''}".rstrip())
    if (module, verb) == ("training", "train"):
        check_overrides(cmd, dict(flags).get("--config", "default"), positionals, check)
    check_paths(cmd, flags, positionals, check, WRITES_INTO.get((module, verb), set()))


def check_overrides(cmd: Command, config: str, overrides: list[str], check: Check) -> None:
    from training.config import load_train_config

    try:
        load_train_config(config, [o for o in overrides if "=" in o])
    except Exception as err:  # any refusal of the config loader is the README's bug here
        check.fail(cmd, f"the config does not load: {str(err).splitlines()[0]} ...")


def check_locust(cmd: Command, check: Check) -> None:
    flags, _ = split_args(cmd.argv[1:], help_text="-f <filename> --locustfile <filename>")
    locustfile = dict(flags).get("-f") or dict(flags).get("--locustfile") or "locustfile.py"
    read(cmd, locustfile, check)
    if not (REPO / locustfile).is_file():
        return
    help_text = locust_help(locustfile)
    flags, positionals = split_args(cmd.argv[1:], help_text)
    for flag, _ in flags:
        if not in_help(flag, help_text):
            check.fail(cmd, f"`{flag}` is not an option of locust with {locustfile}")
    source = (REPO / locustfile).read_text()
    for user in positionals:
        if not re.search(rf"^class {re.escape(user)}\(", source, re.M):
            check.fail(cmd, f"{locustfile} defines no user class {user}")
    check_paths(cmd, flags, [], check)


def check_bentoml(cmd: Command, check: Check) -> None:
    if len(cmd.argv) < 2:
        check.fail(cmd, "bentoml needs a sub-command")
        return
    help_text = help_of(".venv/bin/bentoml", cmd.argv[1])
    if help_text is None or "No such command" in help_text:
        check.fail(cmd, f"bentoml has no sub-command {cmd.argv[1]}")
        return
    flags, _ = split_args(cmd.argv[2:], help_text)
    for flag, _ in flags:
        if not in_help(flag, help_text):
            check.fail(cmd, f"`{flag}` is not an option of bentoml {cmd.argv[1]}")


def check_curl(cmd: Command, check: Check) -> None:
    args, flags, urls = cmd.argv[1:], [], []
    while args:
        word = args.pop(0)
        if word in CURL_VALUE_FLAGS and args:
            flags.append((word, args.pop(0)))
        elif word.startswith("-"):
            flags.append((word, None))
        else:
            urls.append(word)
    for url in urls:
        route = re.sub(r"^https?://[^/]+", "", url).split("?")[0] or "/"
        if route not in routes():
            check.fail(cmd, f"the service has no route {route}")
    for flag, value in flags:
        if flag in ("-F", "--form") and "=@" in value:
            read(cmd, path_part(value), check)
        elif flag in ("-o", "--output"):
            write(cmd, value, check)


def check_mkdir(cmd: Command, check: Check) -> None:
    for path in cmd.argv[1:]:
        if not path.startswith("-"):
            write(cmd, path, check)


def check_rm(cmd: Command, check: Check) -> None:
    for path in cmd.argv[1:]:
        if not path.startswith("-"):
            write(cmd, path, check)  # removing what git tracks changes git status too


def check_cp(cmd: Command, check: Check) -> None:
    paths = [p for p in cmd.argv[1:] if not p.startswith("-")]
    for path in paths[:-1]:
        read(cmd, path, check)
    if paths:
        write(cmd, paths[-1], check)


def check_external(cmd: Command, check: Check) -> None:
    """Tools the project installs from Debian (`make system-deps`): flags from their help."""
    program, words = cmd.argv[0], cmd.argv[1:]
    sub = []
    while words and not words[0].startswith("-") and not looks_like_path(words[0]):
        sub.append(words.pop(0))
    help_text = help_of(program, *sub)
    if help_text is None:
        check.missing_tools.add(program)
    flags, positionals = split_args(words, help_text or "")
    for flag, _ in flags:
        if help_text is not None and not in_help(flag, help_text):
            check.fail(cmd, f"`{flag}` is not an option of {program} {' '.join(sub)}".rstrip())
    check_paths(cmd, flags, positionals, check)


# ---------------------------------------------------------------- the tests


def require_git() -> None:
    res = subprocess.run(
        ["git", "rev-parse", "--is-inside-work-tree"], cwd=REPO, capture_output=True
    )
    if res.returncode != 0:
        message = "the README checks need a git work tree (tracked and ignored paths)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def test_readme_commands_run_as_written():
    require_git()
    check = check_readme(README.read_text())
    assert not check.problems, "README commands that would not run as written:\n" + "\n".join(
        check.problems
    )
    if check.missing_tools:
        message = f"not installed, their flags unchecked: {sorted(check.missing_tools)}"
        if os.environ.get("CI"):
            pytest.fail(message + " (make system-deps installs them)")
        warnings.warn(message, stacklevel=1)


def test_readme_has_commands_for_each_step():
    """The sections a user follows keep a runnable example each."""
    text = README.read_text()
    programs = {c.argv[0] for c in shell_commands(text) if c.argv}
    assert {"make", PYTHON, "curl", ".venv/bin/locust"} <= programs
    modules = {c.argv[2] for c in shell_commands(text) if c.argv[:2] == [PYTHON, "-m"]}
    assert {"training", "export", "loadtests.bench"} <= modules


def test_readme_is_short():
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_LINES, f"README.md has {lines} lines; history belongs in docs/"


def test_no_bare_python_in_prose():
    prose = CODE_BLOCK.sub("", README.read_text())
    bare = re.findall(r"(?<![\w/.])(python3?|pip3?) (?:-m|install -e)\b[^`\n]*", prose)
    assert not bare, f"commands without .venv/bin/ in the README's text: {bare}"


def test_python_blocks_compile_and_import_what_exists():
    for block in PYTHON_BLOCK.findall(README.read_text()):
        for node in ast.parse(block, "README.md").body:
            if isinstance(node, ast.ImportFrom):
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                assert importlib.util.find_spec(name) is not None, f"README imports {name}"


def test_settings_table_matches_the_settings():
    from service.settings import Settings

    rows = [line for line in README.read_text().splitlines() if line.startswith("| `SLOTSERVE_")]
    documented = {}
    for row in rows:
        names_cell, default_cell = row.split("|")[1:3]
        names = re.findall(r"`(SLOTSERVE)?(_[A-Z0-9_]+)`", names_cell)
        defaults = re.findall(r"`([^`]*)`", default_cell)
        for i, (_, name) in enumerate(names):
            default = defaults[i] if len(defaults) == len(names) else None
            documented[name[1:].lower()] = default
    fields = Settings.model_fields
    assert sorted(set(documented) - set(fields)) == [], (
        "README documents settings that do not exist"
    )
    assert sorted(set(fields) - set(documented)) == [], "settings missing from the README table"
    for name, default in documented.items():
        actual = fields[name].default
        if default is not None and not isinstance(actual, Path | type(None)):
            shown = shown_default(actual)
            assert default == shown, f"SLOTSERVE_{name.upper()}: README {default}, code {shown}"


def shown_default(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def heading_slugs(markdown: str) -> set[str]:
    text = CODE_BLOCK.sub("", markdown)
    slugs = set()
    for title in re.findall(r"^#+ (.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        slugs.add(slug)
    return slugs


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_local_links_resolve(doc):
    for target in LINK.findall(CODE_BLOCK.sub("", doc.read_text())):
        if "://" in target or target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        assert file.exists(), f"{doc.name} links to {target}, which does not exist"
        if anchor:
            assert anchor in heading_slugs(file.read_text()), f"{doc.name}: no #{anchor} in {path}"


def test_make_help_lists_every_target():
    res = subprocess.run(
        ["make", "--no-print-directory", "help"], cwd=REPO, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    listed = {line.split()[0] for line in res.stdout.splitlines() if line.startswith("  ")}
    targets, _ = makefile()
    assert listed == targets, f"make help lists {sorted(listed ^ targets)} wrongly"


QUOTED_OBJECT = re.compile(
    r'\{"slot": (\d+), "code": (\d+), "label": (null|"[^"]+"), "label_score": ([\d.]+|null), '
    r'"code_distance": ([\d.]+),\s*'
    r'"area": (\d+), "bbox": \[([\d, ]+)\], "mask": \{"size": \[(\d+), (\d+)\], '
    r'"counts": "([^"]*?)\.\.\."'
)


@pytest.mark.slow
def test_the_quoted_response_is_what_the_server_answers(server, tmp_path):
    """The README's example answer is a real one: its quick-start commands, run as written
    (the scene into a temporary folder), still get it from the shipped model."""
    scene = tmp_path / "scene.png"
    made = subprocess.run(
        [PYTHON, "-m", "training", "scene", "--out", str(scene), "--variant", "textured"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode == 0, made.stderr
    answer = httpx.post(
        f"{server.url}/decompose", files={"image": scene.read_bytes()}, timeout=120
    ).json()
    text = README.read_text()
    count = re.search(r"returned (\d+)\s+objects", text)
    assert count and int(count.group(1)) == len(answer["objects"])
    quoted = QUOTED_OBJECT.findall(text)
    assert len(quoted) >= 2
    served = {o["slot"]: o for o in answer["objects"]}
    for slot, code, label, score, distance, area, bbox, h, w, counts in quoted:
        obj = served[int(slot)]
        assert (obj["code"], obj["label"], obj["area"]) == (int(code), json.loads(label), int(area))
        assert obj["label_score"] == json.loads(score)
        assert obj["bbox"] == [int(v) for v in bbox.split(",")]
        assert obj["mask"]["size"] == [int(h), int(w)]
        assert obj["mask"]["counts"].startswith(counts)
        assert obj["code_distance"] == pytest.approx(float(distance), abs=1e-4)
    assert f'"name": "{answer["model"]["name"]}", "version": "{answer["model"]["version"]}"' in text


# ---------------------------------------------------------------- the checker catches breakage


BROKEN = {
    "make no-such-target": "no target",
    "make serve NO_SUCH_VAR=1": "no variable",
    "make bench": "writes reports/bench",
    "python -m training train": "bare `python`",
    "pip install -e .": "bare `pip`",
    f"{PYTHON} -m no_such_module run": "no module",
    f"{PYTHON} -m training frobnicate": "no sub-command",
    f"{PYTHON} -m training evaluate --no-such-flag 3": "`--no-such-flag` is not an option",
    f"{PYTHON} -m training train run.no_such_field=1": "does not load",
    f"{PYTHON} -m training evaluate --checkpoint models/missing.safetensors": "reads models/",
    f"{PYTHON} -m export onnx --checkpoint models/slotserve-shapes/model.safetensors "
    "--out models/slotserve-shapes": "writes models/slotserve-shapes",
    f"{PYTHON} -m export tensorrt --bundle models/slotserve-shapes": "writes models/",
    f"{PYTHON} -m training scene --out scene.png": "writes scene.png",
    ".venv/bin/locust -f loadtests/locustfile.py --no-such-flag": "is not an option of locust",
    ".venv/bin/locust -f loadtests/locustfile.py NoSuchUser": "no user class",
    "curl http://127.0.0.1:3000/no_such_route": "no route",
    "SLOTSERVE_NO_SUCH_SETTING=1 make serve": "is not a setting",
    "frobnicate --all": "not a command this test knows",
    "echo hi > scene.txt": "writes scene.txt",
}


@pytest.mark.parametrize("line, why", BROKEN.items(), ids=list(BROKEN))
def test_checker_reports_a_broken_command(line, why):
    require_git()
    check = check_readme(f"```bash\n{line}\n```\n")
    assert any(why in p for p in check.problems), check.problems


def test_checker_accepts_a_chain_that_makes_what_it_reads():
    require_git()
    text = (
        "```bash\nmkdir -p runs && "
        f"{PYTHON} -m training scene --out runs/x.png \\\n    --variant textured   # a comment\n"
        "curl -F image=@runs/x.png http://127.0.0.1:3000/decompose -o runs/y.json\n```\n"
    )
    check = check_readme(text)
    assert check.problems == []
    assert check.produced == ["runs", "runs/x.png", "runs/y.json"]
