"""The code blocks of the docs, and what each shell block needs: this machine, a cluster, or you.

A shell block (`sh`, `bash`, `shell`, `console`) is marked by an HTML comment on the line above it:

- `<!-- @offline -->`: runs here, with nothing but `.venv` and a Redis at `REDIS_URL`; the tests
  run the offline blocks of a page in order, in one shell, from the repository's root.
- `<!-- @cluster overlay=NAME -->`: needs a cluster deployed from `overlays/NAME` (or from the
  directory NAME, e.g. `examples/thumbnails`); each `kubectl` line is checked against what that
  overlay renders: the namespace, the objects named (`pod/redis-0`, `job/job-wq-2`), the labels.
- `<!-- @manual: why -->`: needs what no test here has (Docker, a registry, an editor, your own
  files); only its `make` targets and repository paths are checked.

Every other block needs a language (`text` for output). Markdown's parsing is markdown-it-py's
(CommonMark): fences inside list items, and indented blocks, which are refused.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from markdown_it import MarkdownIt

REPO = Path(__file__).resolve().parent.parent
SHELLS = frozenset({"sh", "bash", "shell", "console"})
MARKS = frozenset({"offline", "cluster", "manual"})
_MARK = re.compile(r"^<!--\s*@(?P<mark>[\w-]+)(?P<rest>.*?)-->$")
_OPTION = re.compile(r"(\w+)=(\S+)")


def pages() -> list[Path]:
    """The docs users read: the README, docs/, and each example's README."""
    return [
        REPO / "README.md",
        *sorted(REPO.glob("docs/*.md")),
        *sorted(REPO.glob("examples/*/README.md")),
    ]


@dataclass(frozen=True)
class Block:
    """A code block: where it starts, its language, its text, and the mark above it."""

    path: Path
    line: int
    language: str
    text: str
    indented: bool = False
    mark: str | None = None
    reason: str = ""
    options: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"

    @property
    def is_shell(self) -> bool:
        return self.language in SHELLS


def blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    found = []
    for token in MarkdownIt("commonmark").parse(text):
        if token.type not in ("fence", "code_block") or token.map is None:
            continue
        start = token.map[0]
        above = lines[start - 1].strip() if start > 0 else ""
        mark = _MARK.match(above)
        rest = mark["rest"].strip() if mark else ""
        found.append(
            Block(
                path=path,
                line=start + 1,
                language=token.info.split()[0] if token.info.strip() else "",
                text=token.content,
                indented=token.type == "code_block",
                mark=mark["mark"] if mark else None,
                reason=rest.removeprefix(":").strip(),
                options=dict(_OPTION.findall(rest)) if mark else {},
            )
        )
    return found


def all_blocks() -> list[Block]:
    return [block for path in pages() for block in blocks(path)]


def inline_commands(path: Path, program: str) -> list[str]:
    """Inline code spans that are a `program` command line (`kubectl -n job-wq-2 ...`)."""
    spans = []
    for token in MarkdownIt("commonmark").parse(path.read_text(encoding="utf-8")):
        for child in token.children or []:
            if child.type == "code_inline" and child.content.startswith(f"{program} "):
                spans.append(child.content)
    return spans


def commands(script: str) -> Iterator[list[str]]:
    """The simple commands of a shell script, as words: split at `|`, `&&`, `;`, `&`, `(`, `)`,
    comments dropped, lines joined at a trailing backslash, and each `$(...)` as one more."""
    joined = script.replace("\\\n", " ")
    for line in joined.splitlines():
        for inner in re.findall(r"\$\(([^()]*)\)", line):
            yield from commands(inner)
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words: list[str] = []
        for word in lexer:
            if word and set(word) <= set("|&;()"):
                if words:
                    yield words
                words = []
            else:
                words.append(word)
        if words:
            yield words


def program_words(words: list[str]) -> list[str]:
    """`words` without the variable assignments before the program (`E2E_CLUSTER=x make`)."""
    at = 0
    while at < len(words) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[at]):
        at += 1
    return words[at:]


_TOP = "base|seed|components|overlays|clusters|worker|e2e|scripts|docs|examples"
_PATH = re.compile(rf"(?:^|[\s=(])(?:\.\./)*((?:{_TOP})/[\w./-]*)")


def repository_paths(script: str) -> list[str]:
    """Paths into this repository that a script names (`overlays/ghcr`, `../../scripts/x.sh`)."""
    return [path.rstrip("./") or path for path in _PATH.findall(script)]
