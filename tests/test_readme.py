"""The README's commands run as written on a fresh machine: after the Quickstart (which installs
into .venv without activating it) every command uses .venv/bin/..., names scripts that exist,
and gives flags that those scripts accept."""
import importlib.util
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def commands():
    """(section, command) of every line of the README's bash blocks and inline `...` code
    that runs something."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        out += [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]
    out += [c for c in re.findall(r"`([^`\n]+)`", README) if re.match(r"(\S*/)?(python3?|pip)\b", c)]
    return out


def script(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_quickstart_is_two_commands_and_everything_else_uses_the_venv():
    cmds = commands()
    quick = [c for c in cmds if c.startswith("python3 -m venv .venv")]
    assert len(quick) == 2
    for c in cmds:
        for part in re.split(r"\s*&&\s*", c):
            part = re.sub(r"^([A-Z_]+=\S*\s+)+", "", part)     # leading environment settings
            assert part.startswith((".venv/bin/", "python3 -m venv .venv")), f"not runnable as written: {c!r}"


@pytest.mark.parametrize("name", ["train_shakespeare", "sample", "train_tokenizer", "attention_backprop_by_hand",
                                  "demo", "finetune_instructions", "dpo", "make_number_tasks"])
def test_every_readme_command_of_a_script_gives_flags_it_accepts(name):
    parts = [re.sub(r"^([A-Z_]+=\S*\s+)+", "", p) for c in commands() for p in re.split(r"\s*&&\s*", c)]
    parts = [shlex.split(p) for p in parts]
    parts = [p[3:] if p[:2] == [".venv/bin/mpiexec", "-n"] else p for p in parts]   # under mpiexec -n N
    runs = [p[2:] for p in parts if p[:2] == [".venv/bin/python", f"examples/{name}.py"]]
    assert runs, name
    if name == "attention_backprop_by_hand":                # takes no arguments (and runs on import)
        assert all(argv == [] for argv in runs) and (REPO / "examples" / f"{name}.py").exists()
        return
    mod = script(name)
    for argv in runs:
        if name == "train_shakespeare":
            mod.parse(argv)                        # exits 2 with one line on a bad flag
        elif name in ("sample", "demo", "finetune_instructions", "dpo"):
            mod.parse(argv)
        else:
            mod.parser().parse_args(argv)
