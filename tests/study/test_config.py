"""The search config: typed checks on every key, lossless round trip; the safe-loading audit."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from autocompress.errors import ConfigError
from autocompress.study.config import SearchConfig

PACKAGE = Path(__file__).resolve().parents[2] / "autocompress"
BASE = {"name": "c", "task": "t.py:f"}


def test_round_trip_keeps_every_key(tmp_path):
    cfg = SearchConfig.from_dict(
        {**BASE, "trial_timeout_s": 2.5, "fail_fast_after": 0, "baselines": ["int8"], "seed": 7}
    )
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    again = SearchConfig.from_yaml(path)
    assert again == cfg
    assert again.to_dict() == cfg.to_dict()
    assert (again.trial_timeout_s, again.fail_fast_after, again.starts) == (2.5, 0, ("int8",))


def test_defaults():
    cfg = SearchConfig.from_dict(BASE)
    assert cfg.trial_timeout_s is None and cfg.fail_fast_after == 5
    assert SearchConfig.from_dict({**BASE, "baselines": None}).starts == ()


@pytest.mark.parametrize(
    ("key", "value"),
    [("seed", "x"), ("seed", -1), ("seed", 1.5), ("trials", True), ("baselines", "int8"),
     ("report_every", -1), ("tracking", 1), ("epochs", 2.0), ("trial_timeout_s", float("inf")),
     ("trial_timeout_s", -3), ("fail_fast_after", None), ("max_concurrent", 0)],
)  # fmt: skip
def test_wrong_values_name_the_key_and_the_file(key, value):
    with pytest.raises(ConfigError, match=rf"^search\.yaml: .*{key}: "):
        SearchConfig.from_dict({**BASE, key: value}, source="search.yaml")


def test_overrides_are_checked_too():
    with pytest.raises(ConfigError, match="sampler"):
        SearchConfig.from_dict(BASE).with_overrides(sampler="grid")


def test_malformed_yaml_is_one_line_with_its_position(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: x\ntask: [a\n")
    with pytest.raises(ConfigError) as info:
        SearchConfig.from_yaml(path)
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value) and "line 3" in str(info.value)


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            yield node, ast.unparse(node.func)


def test_no_module_unpickles_or_loads_unsafe_yaml():
    """Safe loading: torch.load only with weights_only=True, yaml only safe_load, no pickle."""
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not {"pickle", "dill", "marshal", "shelve", "joblib"} & set(names), path
        for call, name in _calls(tree):
            if name == "torch.load":
                kw = {k.arg: k.value for k in call.keywords}
                assert "weights_only" in kw and ast.literal_eval(kw["weights_only"]) is True, path
            assert name not in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"), path
            assert name not in ("numpy.load", "np.load"), path


EXAMPLES = sorted(
    p
    for p in (PACKAGE.parent / "examples").glob("*/*.yaml")
    if "task" in (yaml.safe_load(p.read_text()) or {})
)


@pytest.mark.parametrize("path", EXAMPLES, ids=[f"{p.parent.name}/{p.name}" for p in EXAMPLES])
def test_example_configs_load(path):
    """Every search config shipped in examples/ passes the config check, names a target that
    exists and a space and objective set that resolve."""
    from autocompress.study.objectives import load_objectives
    from autocompress.study.space import load_space
    from autocompress.targets import TARGETS

    cfg = SearchConfig.from_yaml(path).resolved()
    assert cfg.target in TARGETS
    assert load_space(cfg.search_space).rules
    assert load_objectives(cfg.objectives)
