"""The manifest records each search space as distributions a reader can rerun, not as object reprs."""

import json

from ray import tune

from tumorbench.study.manifest import describe_domain


def test_search_domains_are_recorded_as_data():
    assert describe_domain(tune.loguniform(1e-4, 1e-2)) == {"sample": "loguniform", "range": [1e-4, 1e-2]}
    assert describe_domain(tune.uniform(0, 1)) == {"sample": "uniform", "range": [0, 1]}
    assert describe_domain(tune.choice(["light", "medium"])) == {"sample": "choice", "values": ["light", "medium"]}
    assert describe_domain(tune.randint(1, 5)) == {"sample": "randint", "range": [1, 5]}
    assert describe_domain(tune.lograndint(1, 64)) == {"sample": "lograndint", "range": [1, 64]}
    assert describe_domain(tune.qloguniform(1e-4, 1e-2, 1e-5)) == {
        "sample": "loguniform",
        "range": [1e-4, 1e-2],
        "q": 1e-5,
    }
    assert describe_domain(tune.grid_search([True, False])) == {"grid_search": [True, False]}
    assert describe_domain(0.01) == 0.01


def test_every_described_space_is_json_without_memory_addresses():
    space = {"lr": tune.loguniform(1e-4, 1e-2), "augment": tune.choice(["light"]), "pretrained": [True]}
    text = json.dumps({k: describe_domain(v) for k, v in space.items()})
    assert "object at 0x" not in text and "loguniform" in text
