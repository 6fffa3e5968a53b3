"""Every `attribution-pipeline` command in the README and docs/ parses with the command line's own
parser, its leftover flags being Beam's (issue 26: a newcomer copies them as written)."""

import glob
import os
import re
import shlex

import pytest

from pipeline.cli import build_parser, check_pipeline_flags_quickly

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBCOMMANDS = ("run", "compare", "report", "finalize", "demo")


def _documented_commands() -> list[tuple[str, str]]:
    """(file, command) for each command in a fenced code block (backslash continuations joined)
    or an inline code span that gives a subcommand and at least one argument."""
    found = []
    for path in ["README.md", *sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))]:
        text = open(os.path.join(REPO, path), encoding="utf-8").read()
        name = os.path.relpath(os.path.join(REPO, path), REPO)
        for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" #")[0].strip()
                for part in re.split(r"\s*(?:&&|;|\|)\s*", line):
                    if part.startswith("attribution-pipeline "):
                        found.append((name, part))
        for span in re.findall(r"`(attribution-pipeline [^`]+)`", text):
            words = span.split()
            if len(words) > 2 and words[1] in SUBCOMMANDS:
                found.append((name, span))
    return found


COMMANDS = _documented_commands()


def test_the_docs_hold_commands_to_check():
    assert len(COMMANDS) >= 15 and {c.split()[1] for _, c in COMMANDS} >= {"run", "compare", "report", "demo"}


@pytest.mark.parametrize("where, command", COMMANDS, ids=[f"{w}:{i}" for i, (w, _) in enumerate(COMMANDS)])
def test_a_documented_command_parses(where, command):
    parser = build_parser()
    argv = shlex.split(command)[1:]
    try:
        args, beam_args = parser.parse_known_args(argv)
    except SystemExit:
        pytest.fail(f"{where}: {command!r} does not parse (see the usage error above)")
    assert args.command in SUBCOMMANDS, (where, command)
    check_pipeline_flags_quickly(beam_args, parser)  # a leftover that is not a Beam flag raises ValueError
