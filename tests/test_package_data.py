"""An installed wheel carries its package data: card templates and the bench defaults (the bundled models and
prompts) are found from a fresh virtual environment, away from the repository."""

import json
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Runs inside the fresh environment, from a folder outside the repository.
PROBE = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    import jetspec_hf
    from jetspec_hf import JetSpecDraftModel
    from jetspec_hf.bench.loading import BUNDLED, BUNDLED_PROMPTS
    from jetspec_hf.bench.options import parse_args
    from jetspec_hf.hub import render_head_card

    installed = Path(jetspec_hf.__file__).resolve().parent
    assert installed.is_relative_to(Path(sys.prefix).resolve()), installed
    head = JetSpecDraftModel.from_pretrained(BUNDLED["head"])
    card = render_head_card(head.config, base_model="Qwen/Qwen3-8B")
    args = parse_args([])
    print(json.dumps({
        "package": str(installed),
        "card_has_title": "draft head" in card.text,
        "bundled": {name: path.is_dir() and Path(path).resolve().is_relative_to(installed)
                    for name, path in BUNDLED.items()},
        "prompts": BUNDLED_PROMPTS.is_file() and BUNDLED_PROMPTS.resolve().is_relative_to(installed),
        "bench_default_target": args.target == str(BUNDLED["target"]),
    }))
    """
)


def _source_copy(destination: Path) -> Path:
    """What a wheel is built from, copied with its links, so that the build leaves nothing in the checkout and no
    earlier build/ folder can slip stale files into the wheel."""
    for name in ("pyproject.toml", "README.md"):
        destination.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / name, destination / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "jetspec_hf", destination / "jetspec_hf", symlinks=True, ignore=skip)
    shutil.copytree(REPO / "hub_cards", destination / "hub_cards")  # the target of jetspec_hf/hub/templates
    return destination


def test_installed_wheel_finds_its_templates_and_bench_defaults(tmp_path):
    # The current environment's setuptools builds the wheel; no build environment is downloaded.
    source = _source_copy(tmp_path / "source")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(tmp_path / "dist"), str(source)], check=True, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("jetspec_hf-*.whl")

    environment = tmp_path / "fresh"
    venv.EnvBuilder(with_pip=False).create(environment)
    python = environment / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "--quiet", str(wheel)], check=True, cwd=tmp_path)
    # torch, transformers and the rest come from this environment's site-packages, added as a plain path: its
    # .pth files (the editable install of jetspec_hf among them) are not processed there.
    fresh_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                     capture_output=True, text=True, check=True).stdout.strip())
    (fresh_site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    completed = subprocess.run([str(python), "-c", PROBE], capture_output=True, text=True, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["package"].startswith(str(environment))
    assert result["card_has_title"] and result["prompts"] and result["bench_default_target"]
    assert result["bundled"] == {"target": True, "head": True, "dflash_head": True, "draft_lm": True}

    help_text = subprocess.run([str(environment / "bin" / "jetspec-hf"), "--help"], capture_output=True, text=True,
                               cwd=tmp_path)
    assert help_text.returncode == 0 and "export" in help_text.stdout
