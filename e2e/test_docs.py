"""The docs' commands, as users would type them: offline blocks run on an embedded Redis, cluster
blocks named against the rendered overlay, every block classified (e2e/docblocks.py says how)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from docblocks import (
    MARKS,
    REPO,
    Block,
    all_blocks,
    blocks,
    commands,
    inline_commands,
    pages,
    program_words,
    repository_paths,
)
from kubectlrefs import Rendered, problems, rendered_from
from rediswq.cli.options import SETTINGS
from rediswq.server import EmbeddedRedis
from rendering import render_directory

SHELL_BLOCKS = [block for block in all_blocks() if block.is_shell]
CLUSTER_BLOCKS = [block for block in SHELL_BLOCKS if block.mark == "cluster"]
OFFLINE_PAGES = sorted({block.path for block in SHELL_BLOCKS if block.mark == "offline"})
VENV_BIN = {REPO / ".venv" / "bin", Path(sys.executable).parent}


def classified(block: Block) -> str | None:
    """Why `block` cannot be checked as it is, or None."""
    if block.indented:
        return "an indented code block: fence it, with a language"
    if not block.language:
        return "a fence without a language: sh for commands, text for output"
    if not block.is_shell:
        return f"a mark above a {block.language} block" if block.mark else None
    return mark_problem(block)


def mark_problem(block: Block) -> str | None:
    """What is wrong with a shell block's mark, or None."""
    if block.mark not in MARKS:
        marked = f"marked @{block.mark}" if block.mark else "unmarked"
        return f"a shell block {marked}: mark it @offline, @cluster or @manual"
    if block.mark == "cluster":
        target = block.options.get("overlay")
        if target is None or not (rendered_from(target) / "kustomization.yaml").is_file():
            return f"@cluster needs overlay=<an overlay or a kustomization directory>, not {target}"
    if block.mark == "manual" and not block.reason:
        return "@manual needs a reason: <!-- @manual: why no test can run it -->"
    return None


def test_every_code_block_has_a_language_and_every_shell_block_a_mark() -> None:
    unclassified = [f"{b.where}: {why}" for b in all_blocks() if (why := classified(b))]
    assert not unclassified, "\n".join(unclassified)


def test_the_docs_have_blocks_of_every_kind() -> None:
    """The classification is not vacuous: each mark is in use."""
    assert {block.mark for block in SHELL_BLOCKS} == MARKS


def offline_script(path: Path) -> str:
    """The page's offline blocks in order, as one script; a block marked `exit=N` runs in a
    subshell that must end with N (a run that reports a failed item)."""
    parts = []
    for block in SHELL_BLOCKS:
        if block.path != path or block.mark != "offline":
            continue
        expected = block.options.get("exit")
        if expected is None:
            parts.append(f"# {block.where}\n{block.text}")
        else:
            parts.append(
                f"# {block.where}\nset +e\n(\nset -e\n{block.text})\nstatus=$?\nset -e\n"
                f'[ "$status" = {int(expected)} ] || {{ echo "{block.where}: exit $status, '
                f'not {int(expected)}" >&2; exit 1; }}'
            )
    return "\n".join(parts)


def user_environment(redis_url: str | None) -> dict[str, str]:
    """A new shell's: none of rediswq's settings but REDIS_URL, and no venv on PATH, so a block
    that says `rediswq` without putting `.venv/bin` on PATH fails as it would for a reader."""
    settings = {setting.env for setting in SETTINGS}
    env = {k: v for k, v in os.environ.items() if k not in settings and not k.startswith("VIRTUAL")}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p) not in VENV_BIN]
    env["PATH"] = os.pathsep.join(path)
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    return env


def git_status() -> str:
    if not (REPO / ".git").exists():
        return ""
    return subprocess.run(
        ["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.parametrize("path", OFFLINE_PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_the_offline_blocks_of_a_page_run_in_order_on_an_embedded_redis(path: Path) -> None:
    before = git_status()
    with EmbeddedRedis() as server:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", offline_script(path)],
            cwd=REPO,
            env=user_environment(server.url),
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert git_status() == before, "the blocks changed files in the repository"


def rendered(target: str) -> Rendered:
    text = render_directory(rendered_from(target))
    return Rendered([doc for doc in yaml.safe_load_all(text) if doc], text)


@pytest.mark.parametrize("block", CLUSTER_BLOCKS, ids=lambda b: b.where)
def test_a_cluster_blocks_kubectl_lines_name_what_its_overlay_renders(block: Block) -> None:
    objects = rendered(block.options["overlay"])
    kubectl = [words for words in commands(block.text) if program_words(words)[:1] == ["kubectl"]]
    assert kubectl, f"{block.where}: no kubectl line; mark it @manual"
    wrong = [
        f"{shown(words)}: {problem}"
        for words in kubectl
        for problem in problems(program_words(words), objects)
    ]
    assert not wrong, f"{block.where}, against overlay={block.options['overlay']}:\n" + "\n".join(
        wrong
    )


def shown(words: list[str]) -> str:
    return " ".join(words)


def test_inline_kubectl_commands_name_what_the_dev_overlay_renders() -> None:
    objects = rendered("dev")
    wrong = [
        f"{path.relative_to(REPO)}: `{span}`: {problem}"
        for path in pages()
        for span in inline_commands(path, "kubectl")
        for problem in problems(span.split(), objects)
    ]
    assert not wrong, "\n".join(wrong)


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z0-9-]*):", (REPO / "Makefile").read_text(), re.MULTILINE))


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=lambda b: b.where)
def test_the_make_targets_overlays_and_paths_a_block_names_exist(block: Block) -> None:
    wrong = [f"no repository path {path}" for path in repository_paths(block.text)
             if not (REPO / path).exists()]  # fmt: skip
    for line in commands(block.text):
        words = program_words(line)
        if words[:1] != ["make"]:
            continue
        for word in words[1:]:
            name, equals, value = word.partition("=")
            if not equals and not word.startswith("-") and word not in make_targets():
                wrong.append(f"no make target {word!r}")
            if name == "OVERLAY" and value != "..." and not (REPO / "overlays" / value).is_dir():
                wrong.append(f"no overlay {value!r}")
    assert not wrong, f"{block.where}: " + "; ".join(wrong)


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"^ *```.*?^ *```", "", text, flags=re.MULTILINE | re.DOTALL)  # no # in code
    return {anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}


def test_every_relative_link_of_the_docs_reaches_its_page_and_heading() -> None:
    wrong = []
    for page in pages():
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            file, _, fragment = target.partition("#")
            linked = (page.parent / file).resolve() if file else page
            name = linked.relative_to(REPO).as_posix() if linked.is_relative_to(REPO) else file
            if not linked.exists():
                wrong.append(f"{page.relative_to(REPO)}: ({target}): no {name}")
            elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
                wrong.append(f"{page.relative_to(REPO)}: ({target}): no heading #{fragment}")
    assert not wrong, "\n".join(wrong)


def shape(line: str) -> str:
    """A line of output with its numbers (ports, pids, seconds, counts per worker) as N."""
    return re.sub(r"\d+(\.\d+)?", "N", line.rstrip())


def test_make_demo_then_the_lines_it_prints_show_the_drained_run() -> None:
    """The README's first steps: `make demo`, then paste what it printed."""
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL"}}
    demo = subprocess.run(["make", "--no-print-directory", "demo"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    stop = re.search(r"^Stop it with: (kill \d+)$", demo.stdout, re.MULTILINE)
    assert stop, demo.stdout + demo.stderr
    try:
        assert demo.returncode == 0, demo.stdout + demo.stderr
        kept = demo.stdout.split("Redis is still running")[-1]
        pasted = "\n".join(line for line in kept.splitlines() if line.startswith("  "))
        looked = subprocess.run(
            ["bash", "-euc", pasted],
            cwd=REPO, env=user_environment(None), capture_output=True, text=True, timeout=60,
            check=False,
        )  # fmt: skip
        assert looked.returncode == 0, looked.stderr
        assert "job2  (sealed, drained)" in looked.stdout, looked.stdout
        assert re.search(r"^done +9$", looked.stdout, re.MULTILINE), looked.stdout
        # The README shows the end of that output, as it is but for the numbers.
        readme = (REPO / "README.md").read_text(encoding="utf-8")
        shown = re.search(r"```text\n(Summary: .*?)```", readme, re.DOTALL)
        assert shown, "the README shows no end of make demo's output"
        printed = {shape(line) for line in demo.stdout.splitlines()}
        missing = [line for line in shown[1].splitlines() if shape(line) not in printed]
        assert not missing, f"the README shows lines make demo does not print: {missing}"
    finally:
        subprocess.run(["bash", "-c", stop[1]], check=True)


def test_the_readme_is_short_and_starts_with_make_demo_then_make_test() -> None:
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines: move the detail to docs/"
    first = next(block for block in blocks(REPO / "README.md") if block.is_shell)
    assert first.line <= 60, f"the README's first commands start at line {first.line}"
    said = [program_words(words)[:2] for words in commands(first.text)]
    assert said[:2] == [["make", "demo"], ["make", "test"]], said


def test_the_readmes_table_of_contents_links_every_page_of_the_docs() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)", readme))
    pages_ = {path.relative_to(REPO).as_posix() for path in REPO.glob("docs/*.md")}
    assert pages_ <= linked, f"not in the README: {sorted(pages_ - linked)}"
