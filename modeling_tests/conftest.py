import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")  # 2 shared cores: oversubscription makes tiny models ~50x slower
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(__file__))  # the tiny-config factory

import torch  # noqa: E402

torch.set_num_threads(1)

MAIN_PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "huggingface_hub", "tokenizers", "datasets",
                 "safetensors", "bitsandbytes", "evaluate")


def _installed(name):
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def pytest_report_header(config):
    """The versions this run tests against, at the top of the log (a break then names the release that caused it)."""
    return "main environment: " + ", ".join(f"{name} {_installed(name)}" for name in MAIN_PACKAGES)


def pytest_terminal_summary(terminalreporter):
    """The other transformers environments the cross-version tests ran, at the end of the log."""
    import other_env

    lines = []
    if other_env._other_python_cached.cache_info().currsize:
        python, version, *_rest = other_env._other_python_cached()
        lines.append(f"other environment: transformers {version} at {python}")
    for version, (python, error) in sorted(other_env.MIDDLE_RESULTS.items()):
        lines.append(f"middle environment: transformers {version} at {python or error}")
    for line in lines:
        terminalreporter.write_line(line)
