"""Spec validation: dotted keys, overrides, messages that name the fix."""

from __future__ import annotations

import pytest

from sal.spec.config import (
    SpecError,
    apply_overrides,
    config_hash,
    flatten,
    load_run_spec,
    nest,
    parse_overrides,
    validate_run,
)


def test_defaults_are_the_papers():
    m = validate_run({}).method
    assert (m.rho, m.theta, m.s_max, m.s_noise, m.s_yield, m.delta, m.lambda_, m.sigma_y) == (
        0.0005, 0.005, 1.0, 0.005, 0.01, 1e-7, 1e-5, 0.02)
    assert (m.shrink, m.deform_layers, m.warmup) == (0.9, 3, 15)


def test_overrides_are_yaml_scalars_on_dotted_keys():
    o = parse_overrides(["method.rho=1e-3", "data.name=mnist1d", "train.amp=true"])
    assert o == {"method.rho": 1e-3, "data.name": "mnist1d", "train.amp": True}
    spec = validate_run(apply_overrides({"method": {"name": "sal", "rho": 0.1}}, o))
    assert spec.method.rho == 1e-3 and spec.data.name == "mnist1d"


def test_switching_method_drops_the_other_methods_knobs():
    raw = {"method": {"name": "sal", "theta": 0.1}}
    spec = validate_run(apply_overrides(raw, {"method.name": "sam", "method.rho": 0.1}))
    assert spec.method.name == "sam" and spec.method.rho == 0.1


def test_lambda_is_spelled_lambda_everywhere():
    spec = validate_run({"method": {"name": "sal", "lambda": 2e-5}})
    assert spec.method.lambda_ == 2e-5
    assert flatten(spec)["method.lambda"] == 2e-5
    assert validate_run(nest(flatten(spec))) == spec


def test_config_hash_ignores_the_seed_only():
    a, b = validate_run({"seed": 1}), validate_run({"seed": 2})
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(validate_run({"optim": {"lr": 0.01}}))


def test_one_configuration_rule_leaves_out_the_seed_and_a_yoked_copy_of_events():
    from sal.spec.config import HOW_IT_RAN, configuration

    flat = {"seed": 3, "optim.lr": 0.1, "train.device": "cpu", "method.yoked_events.noise": [4, 9]}
    assert configuration(flat) == {"optim.lr": 0.1, "train.device": "cpu"}
    assert configuration(flat, drop=HOW_IT_RAN) == {"optim.lr": 0.1}
    # where and how a run ran is not its identity
    assert config_hash(validate_run({"train": {"pack": "off"}})) == config_hash(validate_run({"train": {"pack": "on"}}))


@pytest.mark.parametrize("raw,needle", [
    ({"method": {"name": "sal", "s_noise": 0.05, "s_yield": 0.01}}, "method.s_noise=0.05 is above method.s_yield"),
    ({"optim": {"lr": 0}}, "optim.lr=0"),
    ({"method": {"name": "sal", "rho": -1}}, "method.rho=-1"),
    ({"seed": 0}, "seed=0"),
    ({"method": {"name": "sal", "sigma": 1}}, "method.sigma: unknown setting"),
    ({"method": {"name": "nope"}}, "method.name='nope' is not a method"),
    ({"train": {"device": "tpu"}}, "train.device='tpu'"),
    ({"data": {"name": "imagenet"}}, "data.name='imagenet'"),
])
def test_bad_specs_name_the_key_the_value_and_the_fix(raw, needle):
    with pytest.raises(SpecError) as err:
        validate_run(raw)
    assert needle in str(err.value)
    assert "fix:" in str(err.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_run_spec(tmp_path / "nope.yaml")


def test_bad_set_syntax():
    with pytest.raises(SpecError, match="key=value"):
        parse_overrides(["method.rho"])


def test_yaml_on_and_off_are_pack_modes_not_booleans():
    assert validate_run({"train": {"pack": False}}).train.pack == "off"  # YAML 1.1 reads `pack: off` as false
    assert validate_run(apply_overrides({}, parse_overrides(["train.pack=on"]))).train.pack == "on"
