"""The configuration the docs show is the one the tests run."""

import re
from pathlib import Path

import pytest

from flet_resilient.cluster import LoadBalancer, missing_program

DOCS = Path(__file__).parent.parent / "docs"


@pytest.mark.skipif(missing_program() is not None, reason=str(missing_program()))
def test_the_deployment_pages_haproxy_config_is_the_tested_one():
    page = (DOCS / "deployment.md").read_text()
    shown = re.search(r"tests run.*?\n```\n(.*?)```", page, re.S)
    assert shown is not None, "no HAProxy block after 'the tests run'"
    tested = LoadBalancer([8001, 8002], port=8550).config()
    tested = tested[tested.index("defaults") :]  # global: this machine's paths
    assert shown.group(1).strip() == tested.strip()
